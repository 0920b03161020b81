//! Fabric 2's chaincode lifecycle: installed chaincode packages (chaincode-as-a-service
//! `connection.json` packages, by package id) and the `_lifecycle` system chaincode:
//! ApproveChaincodeDefinitionForMyOrg (the approval kept in the organisation's implicit private
//! collection, its hash on the ledger), CheckCommitReadiness (which organisations approved exactly
//! this definition, from those hashes), CommitChaincodeDefinition (needs approvals satisfying the
//! channel's LifecycleEndorsement policy, and is itself endorsed under it) and
//! QueryChaincodeDefinition. Committed definitions become the channel's chaincodes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use medledger_common::channelconfig::ChannelConfig;
use medledger_common::msp::{Identity, NodeRole};
use medledger_common::policy::Policy;
use medledger_proto::lifecycle::{
    ApproveChaincodeDefinitionForMyOrgArgs, CheckCommitReadinessArgs, CheckCommitReadinessResult,
    CommitChaincodeDefinitionArgs, InstallChaincodeResult, QueryChaincodeDefinitionArgs,
    QueryChaincodeDefinitionResult, QueryInstalledChaincodesResult, chaincode_source,
    query_installed_chaincodes_result,
};
use medledger_proto::protos::{ApplicationPolicy, Response, application_policy};
use prost::Message;

use crate::channel::collection::{Collection, Collections, IMPLICIT_PREFIX, channel_policy};
use crate::channel::definition::{ChaincodeDefinition, ChaincodeEndpoint, ConnectionInfo};
use crate::execution::response;
use crate::execution::simulator::TxSimulator;
use crate::storage::ledger::{Ledger, pvt_hash};

/// The lifecycle system chaincode's name (and state namespace).
pub const LIFECYCLE: &str = "_lifecycle";

/// Largest chaincode package accepted.
pub const MAX_PACKAGE_BYTES: usize = 16 * 1024 * 1024;

const DEFINITION_PREFIX: &str = "namespaces/definition/";

/// Errors of the lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("chaincode package: {0}")]
    Package(String),
    #[error("package store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// An installed chaincode package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub package_id: String,
    pub label: String,
    pub connection: ConnectionInfo,
}

/// `label:sha256(package)`, as Fabric names packages.
pub fn package_id(label: &str, package: &[u8]) -> String {
    format!(
        "{label}:{}",
        hex::encode(medledger_common::crypto::sha256(package))
    )
}

fn tar_entries(gz: &[u8], what: &str) -> Result<BTreeMap<String, Vec<u8>>, LifecycleError> {
    let bad = |e: std::io::Error| LifecycleError::Package(format!("{what}: {e}"));
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_PACKAGE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(bad)?;
        if bytes.len() > MAX_PACKAGE_BYTES {
            return Err(LifecycleError::Package(format!(
                "{what}: {name} is too large"
            )));
        }
        out.insert(name, bytes);
    }
    Ok(out)
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Metadata {
    #[serde(rename = "type")]
    kind: String,
    label: String,
}

/// Reads a Fabric chaincode package: `metadata.json` (type `ccaas` or `external`, label) and
/// `code.tar.gz` holding `connection.json`.
pub fn parse_package(package: &[u8]) -> Result<InstalledPackage, LifecycleError> {
    if package.len() > MAX_PACKAGE_BYTES {
        return Err(LifecycleError::Package("package too large".into()));
    }
    let outer = tar_entries(package, "not a .tar.gz package")?;
    let meta: Metadata = serde_json::from_slice(
        outer
            .get("metadata.json")
            .ok_or_else(|| LifecycleError::Package("metadata.json is missing".into()))?,
    )
    .map_err(|e| LifecycleError::Package(format!("metadata.json: {e}")))?;
    if meta.kind != "ccaas" && meta.kind != "external" {
        return Err(LifecycleError::Package(format!(
            "type {:?}: this peer runs chaincode as a service only (type \"ccaas\")",
            meta.kind
        )));
    }
    let label_ok = !meta.label.is_empty()
        && meta
            .label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if !label_ok {
        return Err(LifecycleError::Package(format!(
            "label {:?} must be letters, digits, '_', '.', '+' or '-'",
            meta.label
        )));
    }
    let code = outer
        .get("code.tar.gz")
        .ok_or_else(|| LifecycleError::Package("code.tar.gz is missing".into()))?;
    let inner = tar_entries(code, "code.tar.gz")?;
    let connection: ConnectionInfo = serde_json::from_slice(
        inner
            .get("connection.json")
            .ok_or_else(|| LifecycleError::Package("code.tar.gz has no connection.json".into()))?,
    )
    .map_err(|e| LifecycleError::Package(format!("connection.json: {e}")))?;
    Ok(InstalledPackage {
        package_id: package_id(&meta.label, package),
        label: meta.label,
        connection,
    })
}

fn tar_gz(files: &[(&str, &[u8])]) -> Result<Vec<u8>, LifecycleError> {
    let io = |e: std::io::Error| LifecycleError::Package(e.to_string());
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, *bytes).map_err(io)?;
    }
    builder.into_inner().map_err(io)?.finish().map_err(io)
}

/// Builds a chaincode-as-a-service package as Fabric's samples do.
pub fn build_package(label: &str, connection: &ConnectionInfo) -> Result<Vec<u8>, LifecycleError> {
    let conn = serde_json::to_vec_pretty(connection)
        .map_err(|e| LifecycleError::Package(e.to_string()))?;
    let code = tar_gz(&[("connection.json", &conn)])?;
    let meta = serde_json::to_vec(&Metadata {
        kind: "ccaas".into(),
        label: label.into(),
    })
    .map_err(|e| LifecycleError::Package(e.to_string()))?;
    let package = tar_gz(&[("metadata.json", &meta), ("code.tar.gz", &code)])?;
    parse_package(&package)?;
    Ok(package)
}

/// The packages installed on a peer, one file per package id.
pub struct PackageStore {
    dir: PathBuf,
}

impl PackageStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, package_id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.tar.gz", package_id.replace(':', ".")))
    }

    /// Installs a package (idempotent); returns what it is.
    pub fn install(&self, package: &[u8]) -> Result<InstalledPackage, LifecycleError> {
        let p = parse_package(package)?;
        let path = self.path(&p.package_id);
        let err = |e: std::io::Error| LifecycleError::Store {
            path: path.clone(),
            reason: e.to_string(),
        };
        medledger_common::durable::write_file_durably(&path, package, None).map_err(err)?;
        Ok(p)
    }

    /// Every installed package, by package id.
    pub fn list(&self) -> Result<Vec<InstalledPackage>, LifecycleError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(LifecycleError::Store {
                    path: self.dir.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if !path.to_string_lossy().ends_with(".tar.gz") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|err| LifecycleError::Store {
                path: path.clone(),
                reason: err.to_string(),
            })?;
            out.push(parse_package(&bytes)?);
        }
        out.sort_by(|a, b| a.package_id.cmp(&b.package_id));
        Ok(out)
    }

    /// An installed package by id.
    pub fn get(&self, package_id: &str) -> Result<Option<InstalledPackage>, LifecycleError> {
        self.bytes(package_id)?
            .map(|b| parse_package(&b))
            .transpose()
    }

    /// The bytes of an installed package, as installed.
    pub fn bytes(&self, package_id: &str) -> Result<Option<Vec<u8>>, LifecycleError> {
        if package_id.contains('/') || package_id.contains("..") {
            return Ok(None);
        }
        match std::fs::read(self.path(package_id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LifecycleError::Store {
                path: self.path(package_id),
                reason: e.to_string(),
            }),
        }
    }
}

/// The `_lifecycle` definition itself: public writes under LifecycleEndorsement, each
/// organisation's approvals (its implicit collection) under that organisation's Endorsement.
pub fn lifecycle_definition(config: &ChannelConfig) -> ChaincodeDefinition {
    let mut collections = Collections::default();
    for org in &config.application_orgs {
        let mut c = Collection::implicit(org);
        c.endorsement_policy = config
            .policy(&format!("/Channel/Application/{org}/Endorsement"))
            .cloned();
        collections.insert(c);
    }
    ChaincodeDefinition {
        name: LIFECYCLE.into(),
        version: String::new(),
        sequence: 0,
        endpoint: None,
        endorsement_policy: config
            .policy("/Channel/Application/LifecycleEndorsement")
            .cloned()
            .unwrap_or(Policy::Signature(Default::default())),
        endorsement_plugin: "escc".into(),
        validation_plugin: "vscc".into(),
        collections,
    }
}

fn implicit(org: &str) -> String {
    format!("{IMPLICIT_PREFIX}{org}")
}

fn approval_key(name: &str, sequence: i64) -> String {
    format!("approval/{name}/{sequence}")
}

fn source_key(name: &str, sequence: i64) -> String {
    format!("source/{name}/{sequence}")
}

/// The definition parameters every approval and the commit must agree on, with Fabric's
/// defaults filled in, encoded canonically.
fn canonical(mut d: CommitChaincodeDefinitionArgs) -> CommitChaincodeDefinitionArgs {
    if d.endorsement_plugin.is_empty() {
        d.endorsement_plugin = "escc".into();
    }
    if d.validation_plugin.is_empty() {
        d.validation_plugin = "vscc".into();
    }
    if d.validation_parameter.is_empty() {
        d.validation_parameter = ApplicationPolicy {
            r#type: Some(application_policy::Type::ChannelConfigPolicyReference(
                "/Channel/Application/Endorsement".into(),
            )),
        }
        .encode_to_vec();
    }
    d
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

/// A definition as the channel uses it (no endpoint yet).
pub fn resolve(
    d: &CommitChaincodeDefinitionArgs,
    config: &ChannelConfig,
) -> Result<ChaincodeDefinition, LifecycleError> {
    let invalid = |m: String| LifecycleError::Invalid(m);
    if !valid_name(&d.name) {
        return Err(invalid(format!(
            "chaincode name {:?} must be letters, digits, '_' or '-' and not start with '_'",
            d.name
        )));
    }
    if d.version.is_empty() || d.sequence < 1 {
        return Err(invalid(
            "a definition needs a version and a sequence of 1 or more".into(),
        ));
    }
    if d.init_required {
        return Err(invalid(
            "init_required is not supported: initialise in a normal transaction".into(),
        ));
    }
    let policy = ApplicationPolicy::decode(d.validation_parameter.as_slice())
        .map_err(|e| invalid(format!("validation parameter: {e}")))?;
    let endorsement_policy = match policy.r#type {
        Some(application_policy::Type::SignaturePolicy(p)) => Policy::Signature(p),
        Some(application_policy::Type::ChannelConfigPolicyReference(path)) => {
            channel_policy(config, &path).map_err(invalid)?
        }
        None => return Err(invalid("the endorsement policy is empty".into())),
    };
    let collections = Collections::from_package(&d.collections.clone().unwrap_or_default(), config)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(ChaincodeDefinition {
        name: d.name.clone(),
        version: d.version.clone(),
        sequence: d.sequence,
        endpoint: None,
        endorsement_policy,
        endorsement_plugin: d.endorsement_plugin.clone(),
        validation_plugin: d.validation_plugin.clone(),
        collections,
    })
}

/// The committed definition of `name`, if any.
pub fn committed(
    ledger: &Ledger,
    name: &str,
) -> Result<Option<CommitChaincodeDefinitionArgs>, String> {
    ledger
        .state(LIFECYCLE, &format!("{DEFINITION_PREFIX}{name}"))
        .map_err(|e| e.to_string())?
        .map(|v| {
            CommitChaincodeDefinitionArgs::decode(v.value.as_slice()).map_err(|e| e.to_string())
        })
        .transpose()
}

/// Every committed definition, resolved, with this peer's endpoint when its organisation
/// approved an installed package for it.
pub fn committed_definitions(
    ledger: &Ledger,
    config: &ChannelConfig,
    local_msp: &str,
    packages: &PackageStore,
) -> Result<Vec<ChaincodeDefinition>, String> {
    let mut out = Vec::new();
    let end = format!("{DEFINITION_PREFIX}\u{10FFFF}");
    for (_, v) in ledger
        .range(LIFECYCLE, DEFINITION_PREFIX, &end, 10_000)
        .map_err(|e| e.to_string())?
    {
        let args =
            CommitChaincodeDefinitionArgs::decode(v.value.as_slice()).map_err(|e| e.to_string())?;
        let mut def = match resolve(&args, config) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(chaincode = %args.name, error = %e, "committed definition does not resolve");
                continue;
            }
        };
        let source = ledger
            .pvt_state(
                LIFECYCLE,
                &implicit(local_msp),
                &source_key(&args.name, args.sequence),
            )
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v.value).into_owned());
        if let Some(package_id) = source.filter(|s| s != "-")
            && let Ok(Some(p)) = packages.get(&package_id)
        {
            def.endpoint = Some(ChaincodeEndpoint {
                name: args.name.clone(),
                version: args.version.clone(),
                package_id: p.package_id,
                connection: p.connection,
            });
        }
        out.push(def);
    }
    Ok(out)
}

/// Which organisations approved exactly `def` (by the hashes of their approvals).
fn approvals(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    def: &CommitChaincodeDefinitionArgs,
) -> Result<BTreeMap<String, bool>, String> {
    let expected = pvt_hash(&def.encode_to_vec());
    let mut out = BTreeMap::new();
    for org in &config.application_orgs {
        let h = sim
            .get_private_data_hash(
                LIFECYCLE,
                &implicit(org),
                &approval_key(&def.name, def.sequence),
            )
            .map_err(|e| e.to_string())?;
        out.insert(org.clone(), h.as_deref() == Some(expected.as_slice()));
    }
    Ok(out)
}

fn ok(payload: Vec<u8>) -> Response {
    response(200, "", payload)
}

fn fail(message: impl Into<String>) -> Response {
    response(500, message, Vec::new())
}

/// Runs one `_lifecycle` function (`args[0]`, with the protobuf arguments in `args[1]`).
pub fn execute(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    local_msp: &str,
    creator: &Identity,
    args: &[Vec<u8>],
) -> Response {
    let function = args
        .first()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default();
    let input = args.get(1).map(Vec::as_slice).unwrap_or_default();
    let result = match function.as_str() {
        "ApproveChaincodeDefinitionForMyOrg" => approve(sim, config, local_msp, creator, input),
        "CheckCommitReadiness" => check_commit_readiness(sim, config, input),
        "CommitChaincodeDefinition" => commit(sim, config, local_msp, input),
        "QueryChaincodeDefinition" => query(sim, config, input),
        "QueryChaincodeDefinitions" => query_all(sim),
        "QueryApprovedChaincodeDefinition" => query_approved(sim, local_msp, input),
        "InstallChaincode" => Err(
            "InstallChaincode is addressed to a peer, not a channel (use `lifecycle chaincode install`)".into(),
        ),
        f => Err(format!("unknown _lifecycle function {f:?}")),
    };
    match result {
        Ok(payload) => ok(payload),
        Err(e) => fail(e),
    }
}

fn decode<M: Message + Default>(input: &[u8], what: &str) -> Result<M, String> {
    M::decode(input).map_err(|e| format!("malformed {what}: {e}"))
}

fn committed_sequence(
    sim: &mut TxSimulator,
    name: &str,
) -> Result<(i64, Option<CommitChaincodeDefinitionArgs>), String> {
    match sim
        .get_state(LIFECYCLE, &format!("{DEFINITION_PREFIX}{name}"))
        .map_err(|e| e.to_string())?
    {
        Some(b) => {
            let d = decode::<CommitChaincodeDefinitionArgs>(&b, "committed definition")?;
            Ok((d.sequence, Some(d)))
        }
        None => Ok((0, None)),
    }
}

fn approve(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    local_msp: &str,
    creator: &Identity,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    if creator.mspid != local_msp || creator.role != NodeRole::Admin {
        return Err(format!(
            "only an admin of {local_msp} may approve a definition for it on this peer"
        ));
    }
    let a: ApproveChaincodeDefinitionForMyOrgArgs = decode(input, "approve arguments")?;
    let def = canonical(CommitChaincodeDefinitionArgs {
        sequence: a.sequence,
        name: a.name.clone(),
        version: a.version.clone(),
        endorsement_plugin: a.endorsement_plugin.clone(),
        validation_plugin: a.validation_plugin.clone(),
        validation_parameter: a.validation_parameter.clone(),
        collections: a.collections.clone(),
        init_required: a.init_required,
    });
    resolve(&def, config).map_err(|e| e.to_string())?;
    let (current, committed) = committed_sequence(sim, &def.name)?;
    let allowed = def.sequence == current + 1
        || (def.sequence == current && committed.as_ref() == Some(&def));
    if !allowed {
        return Err(format!(
            "requested sequence is {}, but new definition must be sequence {}",
            def.sequence,
            current + 1
        ));
    }
    let package_id = match a.source.and_then(|s| s.r#type) {
        Some(chaincode_source::Type::LocalPackage(l)) if !l.package_id.is_empty() => l.package_id,
        _ => "-".into(),
    };
    let coll = implicit(local_msp);
    sim.put_private_data(
        LIFECYCLE,
        &coll,
        &approval_key(&def.name, def.sequence),
        def.encode_to_vec(),
    )
    .map_err(|e| e.to_string())?;
    sim.put_private_data(
        LIFECYCLE,
        &coll,
        &source_key(&def.name, def.sequence),
        package_id.into_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Vec::new())
}

fn readiness_args(a: CheckCommitReadinessArgs) -> CommitChaincodeDefinitionArgs {
    canonical(CommitChaincodeDefinitionArgs {
        sequence: a.sequence,
        name: a.name,
        version: a.version,
        endorsement_plugin: a.endorsement_plugin,
        validation_plugin: a.validation_plugin,
        validation_parameter: a.validation_parameter,
        collections: a.collections,
        init_required: a.init_required,
    })
}

/// A definition that may be committed next: it resolves and its sequence follows the committed one.
fn check_next(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    def: &CommitChaincodeDefinitionArgs,
) -> Result<(), String> {
    resolve(def, config).map_err(|e| e.to_string())?;
    let (current, _) = committed_sequence(sim, &def.name)?;
    if def.sequence != current + 1 {
        return Err(format!(
            "requested sequence is {}, but new definition must be sequence {}",
            def.sequence,
            current + 1
        ));
    }
    Ok(())
}

fn check_commit_readiness(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let def = readiness_args(decode(input, "check commit readiness arguments")?);
    check_next(sim, config, &def)?;
    Ok(CheckCommitReadinessResult {
        approvals: approvals(sim, config, &def)?.into_iter().collect(),
    }
    .encode_to_vec())
}

fn commit(
    sim: &mut TxSimulator,
    config: &ChannelConfig,
    local_msp: &str,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let def = canonical(decode(input, "commit arguments")?);
    check_next(sim, config, &def)?;
    let approvals = approvals(sim, config, &def)?;
    if approvals.get(local_msp) != Some(&true) {
        return Err(format!(
            "chaincode definition not agreed to by this org ({local_msp})"
        ));
    }
    let approved: Vec<&str> = approvals
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(o, _)| o.as_str())
        .collect();
    let policy = config
        .policy("/Channel/Application/LifecycleEndorsement")
        .ok_or("the channel has no LifecycleEndorsement policy")?;
    if !policy.satisfied_by_organisations(&approved) {
        return Err(format!(
            "chaincode definition not agreed to by enough organisations: approvals {approvals:?} do not satisfy LifecycleEndorsement"
        ));
    }
    sim.put_state(
        LIFECYCLE,
        &format!("{DEFINITION_PREFIX}{}", def.name),
        def.encode_to_vec(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Vec::new())
}

fn query(sim: &mut TxSimulator, config: &ChannelConfig, input: &[u8]) -> Result<Vec<u8>, String> {
    let a: QueryChaincodeDefinitionArgs = decode(input, "query arguments")?;
    let (_, def) = committed_sequence(sim, &a.name)?;
    let def = def.ok_or_else(|| format!("namespace {} is not defined", a.name))?;
    let approvals = approvals(sim, config, &def)?;
    Ok(QueryChaincodeDefinitionResult {
        sequence: def.sequence,
        version: def.version,
        endorsement_plugin: def.endorsement_plugin,
        validation_plugin: def.validation_plugin,
        validation_parameter: def.validation_parameter,
        collections: def.collections,
        init_required: def.init_required,
        approvals: approvals.into_iter().collect(),
    }
    .encode_to_vec())
}

/// Every committed definition on the channel (`peer lifecycle chaincode querycommitted` without
/// `-n`).
fn query_all(sim: &mut TxSimulator) -> Result<Vec<u8>, String> {
    use medledger_proto::lifecycle::QueryChaincodeDefinitionsResult;
    use medledger_proto::lifecycle::query_chaincode_definitions_result::ChaincodeDefinition;
    let end = format!("{DEFINITION_PREFIX}\u{10FFFF}");
    let (defs, _) = sim
        .range(LIFECYCLE, DEFINITION_PREFIX, &end, None)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(defs.len());
    for (_, bytes) in defs {
        let d = decode::<CommitChaincodeDefinitionArgs>(&bytes, "committed definition")?;
        out.push(ChaincodeDefinition {
            name: d.name,
            sequence: d.sequence,
            version: d.version,
            endorsement_plugin: d.endorsement_plugin,
            validation_plugin: d.validation_plugin,
            validation_parameter: d.validation_parameter,
            collections: d.collections,
            init_required: d.init_required,
        });
    }
    Ok(QueryChaincodeDefinitionsResult {
        chaincode_definitions: out,
    }
    .encode_to_vec())
}

/// What this peer's organisation approved for a chaincode (`peer lifecycle chaincode
/// queryapproved`): at `sequence`, or with 0 the newest approval (the next sequence if approved,
/// else the committed one).
fn query_approved(sim: &mut TxSimulator, local_msp: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    use medledger_proto::lifecycle::{
        ChaincodeSource, QueryApprovedChaincodeDefinitionArgs,
        QueryApprovedChaincodeDefinitionResult, chaincode_source,
    };
    let a: QueryApprovedChaincodeDefinitionArgs = decode(input, "queryapproved arguments")?;
    let coll = implicit(local_msp);
    let (committed, _) = committed_sequence(sim, &a.name)?;
    let candidates = if a.sequence > 0 {
        vec![a.sequence]
    } else {
        vec![committed.saturating_add(1), committed]
    };
    for sequence in candidates.into_iter().filter(|s| *s > 0) {
        let Some(bytes) = sim
            .get_private_data(LIFECYCLE, &coll, &approval_key(&a.name, sequence))
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let d = decode::<CommitChaincodeDefinitionArgs>(&bytes, "approved definition")?;
        let package_id = sim
            .get_private_data(LIFECYCLE, &coll, &source_key(&a.name, sequence))
            .map_err(|e| e.to_string())?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|p| p != "-");
        let source = Some(ChaincodeSource {
            r#type: Some(match package_id {
                Some(package_id) => {
                    chaincode_source::Type::LocalPackage(chaincode_source::Local { package_id })
                }
                None => chaincode_source::Type::Unavailable(chaincode_source::Unavailable {}),
            }),
        });
        return Ok(QueryApprovedChaincodeDefinitionResult {
            sequence: d.sequence,
            version: d.version,
            endorsement_plugin: d.endorsement_plugin,
            validation_plugin: d.validation_plugin,
            validation_parameter: d.validation_parameter,
            collections: d.collections,
            init_required: d.init_required,
            source,
        }
        .encode_to_vec());
    }
    Err(format!(
        "could not fetch approved chaincode definition (name: '{}', sequence: '{}') on channel",
        a.name, a.sequence
    ))
}

/// Answers a `_lifecycle` proposal addressed to this peer (no channel): `InstallChaincode`,
/// `QueryInstalledChaincodes` and `GetInstalledChaincodePackage`, for admins of the peer's
/// organisation.
pub fn install(packages: &PackageStore, creator: &Identity, args: &[Vec<u8>]) -> Response {
    if creator.role != NodeRole::Admin {
        return fail("only an admin of the peer's organisation may install or list chaincode");
    }
    if args.first().map(Vec::as_slice) == Some(b"QueryInstalledChaincodes".as_slice()) {
        return match packages.list() {
            Ok(list) => ok(QueryInstalledChaincodesResult {
                installed_chaincodes: list
                    .into_iter()
                    .map(|p| query_installed_chaincodes_result::InstalledChaincode {
                        package_id: p.package_id,
                        label: p.label,
                        references: Default::default(),
                    })
                    .collect(),
            }
            .encode_to_vec()),
            Err(e) => fail(e.to_string()),
        };
    }
    if args.first().map(Vec::as_slice) == Some(b"GetInstalledChaincodePackage".as_slice()) {
        use medledger_proto::lifecycle::{
            GetInstalledChaincodePackageArgs, GetInstalledChaincodePackageResult,
        };
        let a: GetInstalledChaincodePackageArgs = match decode(
            args.get(1).map(Vec::as_slice).unwrap_or_default(),
            "getinstalledpackage arguments",
        ) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        return match packages.bytes(&a.package_id) {
            Ok(Some(bytes)) => ok(GetInstalledChaincodePackageResult {
                chaincode_install_package: bytes,
            }
            .encode_to_vec()),
            Ok(None) => fail(format!(
                "could not load cc install package: chaincode install package '{}' not found",
                a.package_id
            )),
            Err(e) => fail(e.to_string()),
        };
    }
    if args.first().map(Vec::as_slice) != Some(b"InstallChaincode".as_slice()) {
        return fail(
            "only InstallChaincode, QueryInstalledChaincodes and GetInstalledChaincodePackage are addressed to a peer without a channel",
        );
    }
    let a: medledger_proto::lifecycle::InstallChaincodeArgs = match decode(
        args.get(1).map(Vec::as_slice).unwrap_or_default(),
        "install arguments",
    ) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    match packages.install(&a.chaincode_install_package) {
        Ok(p) => ok(InstallChaincodeResult {
            package_id: p.package_id,
            label: p.label,
        }
        .encode_to_vec()),
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_round_trip_and_bad_packages_are_refused() {
        let conn = ConnectionInfo {
            address: "127.0.0.1:9999".into(),
            tls_required: false,
            root_cert: String::new(),
            domain: String::new(),
        };
        let pkg = build_package("medical_1.0", &conn).unwrap();
        let p = parse_package(&pkg).unwrap();
        assert_eq!(p.label, "medical_1.0");
        assert_eq!(p.connection, conn);
        assert_eq!(p.package_id, package_id("medical_1.0", &pkg));
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::new(dir.path());
        assert_eq!(store.install(&pkg).unwrap(), p);
        assert_eq!(store.get(&p.package_id).unwrap(), Some(p));
        assert_eq!(store.get("nope:00").unwrap(), None);
        assert_eq!(store.get("../../etc/passwd").unwrap(), None);

        assert!(parse_package(b"not a tarball").is_err());
        let no_conn = tar_gz(&[("metadata.json", br#"{"type":"ccaas","label":"x"}"#)]).unwrap();
        assert!(
            parse_package(&no_conn)
                .unwrap_err()
                .to_string()
                .contains("code.tar.gz")
        );
        let golang = tar_gz(&[("metadata.json", br#"{"type":"golang","label":"x"}"#)]).unwrap();
        assert!(
            parse_package(&golang)
                .unwrap_err()
                .to_string()
                .contains("as a service")
        );
        let bad_label = tar_gz(&[("metadata.json", br#"{"type":"ccaas","label":"a b"}"#)]).unwrap();
        assert!(
            parse_package(&bad_label)
                .unwrap_err()
                .to_string()
                .contains("label")
        );
    }
}
