//! `medledger-peer lifecycle chaincode ...`: Fabric 2's lifecycle commands, one function each.

use std::path::PathBuf;

use super::*;

/// Runs one `lifecycle chaincode` subcommand.
pub(super) async fn lifecycle(cmd: LifecycleChaincode) -> Result<(), NodeError> {
    match cmd {
        LifecycleChaincode::Package {
            output,
            label,
            address,
            tls_root_cert,
        } => package(output, label, address, tls_root_cert),
        LifecycleChaincode::Install { package, target } => install(package, target).await,
        LifecycleChaincode::Queryinstalled { target } => query_installed(target).await,
        LifecycleChaincode::Approveformyorg {
            def,
            package_id,
            target,
        } => approve_for_my_org(def, package_id, target).await,
        LifecycleChaincode::Checkcommitreadiness { def, target } => {
            check_commit_readiness(def, target).await
        }
        LifecycleChaincode::Commit { def, target } => commit(def, target).await,
        LifecycleChaincode::Querycommitted {
            channel,
            name: Some(name),
            target,
        } => query_committed(channel, name, target).await,
        LifecycleChaincode::Querycommitted {
            channel,
            name: None,
            target,
        } => query_all_committed(channel, target).await,
        LifecycleChaincode::Queryapproved {
            channel,
            name,
            sequence,
            target,
        } => query_approved(channel, name, sequence, target).await,
        LifecycleChaincode::Getinstalledpackage {
            package_id,
            output_directory,
            target,
        } => get_installed_package(package_id, output_directory, target).await,
    }
}

/// Writes a chaincode-as-a-service package (`connection.json` + metadata), as `peer lifecycle chaincode package`.
fn package(
    output: PathBuf,
    label: String,
    address: String,
    tls_root_cert: Option<PathBuf>,
) -> Result<(), NodeError> {
    let root_cert = match &tls_root_cert {
        Some(p) => std::fs::read_to_string(p).map_err(|e| NodeError::File {
            path: p.clone(),
            reason: e.to_string(),
        })?,
        None => String::new(),
    };
    let connection = ConnectionInfo {
        address,
        tls_required: tls_root_cert.is_some(),
        root_cert,
        domain: String::new(),
    };
    let package =
        build_package(&label, &connection).map_err(|e| NodeError::Failed(e.to_string()))?;
    std::fs::write(&output, &package).map_err(|e| NodeError::File {
        path: output.clone(),
        reason: e.to_string(),
    })?;
    println!(
        "Package written to {}; package ID: {}",
        output.display(),
        package_id(&label, &package)
    );
    Ok(())
}

/// Installs a package on the peer (its organisation's admins only).
async fn install(package: PathBuf, target: PeerTarget) -> Result<(), NodeError> {
    let bytes = std::fs::read(&package).map_err(|e| NodeError::File {
        path: package.clone(),
        reason: e.to_string(),
    })?;
    let resp = Session::open(&target)
        .await?
        .ask_peer(
            crate::execution::lifecycle::LIFECYCLE,
            vec![
                b"InstallChaincode".to_vec(),
                InstallChaincodeArgs {
                    chaincode_install_package: bytes,
                }
                .encode_to_vec(),
            ],
        )
        .await
        .map_err(|e| NodeError::Failed(format!("chaincode install failed: {e}")))?;
    let r = InstallChaincodeResult::decode(resp.payload.as_slice())
        .map_err(|e| NodeError::Failed(format!("install result: {e}")))?;
    println!(
        "Chaincode code package identifier: {} (label {})",
        r.package_id, r.label
    );
    Ok(())
}

/// Lists the packages installed on the peer.
async fn query_installed(target: PeerTarget) -> Result<(), NodeError> {
    let resp = Session::open(&target)
        .await?
        .ask_peer(
            crate::execution::lifecycle::LIFECYCLE,
            vec![b"QueryInstalledChaincodes".to_vec(), Vec::new()],
        )
        .await?;
    let r = QueryInstalledChaincodesResult::decode(resp.payload.as_slice())
        .map_err(|e| NodeError::Failed(format!("installed chaincodes: {e}")))?;
    println!("Installed chaincodes on peer:");
    for c in r.installed_chaincodes {
        println!("Package ID: {}, Label: {}", c.package_id, c.label);
    }
    Ok(())
}

/// Approves a definition for the signer's organisation (a transaction endorsed by it alone).
async fn approve_for_my_org(
    def: DefinitionArgs,
    package_id: String,
    target: PeerTarget,
) -> Result<(), NodeError> {
    let d = definition(&def)?;
    let args = ApproveChaincodeDefinitionForMyOrgArgs {
        sequence: d.sequence,
        name: d.name,
        version: d.version,
        endorsement_plugin: d.endorsement_plugin,
        validation_plugin: d.validation_plugin,
        validation_parameter: d.validation_parameter,
        collections: d.collections,
        init_required: false,
        source: Some(ChaincodeSource {
            r#type: Some(chaincode_source::Type::LocalPackage(
                chaincode_source::Local { package_id },
            )),
        }),
    };
    let mut session = Session::open(&target).await?;
    let own = session.signer.mspid().to_owned();
    let inv = lifecycle_invocation(
        &def.channel,
        "ApproveChaincodeDefinitionForMyOrg",
        args.encode_to_vec(),
    );
    let (tx_id, _, block) = session.submit(&inv, vec![own.clone()]).await?;
    println!("Chaincode definition approved for {own}: txid {tx_id}, block {block} (VALID)");
    Ok(())
}

/// Which organisations have approved a definition.
async fn check_commit_readiness(def: DefinitionArgs, target: PeerTarget) -> Result<(), NodeError> {
    let d = definition(&def)?;
    let args = CheckCommitReadinessArgs {
        sequence: d.sequence,
        name: d.name,
        version: d.version,
        endorsement_plugin: d.endorsement_plugin,
        validation_plugin: d.validation_plugin,
        validation_parameter: d.validation_parameter,
        collections: d.collections,
        init_required: false,
    };
    let mut session = Session::open(&target).await?;
    let out = session
        .evaluate(&lifecycle_invocation(
            &def.channel,
            "CheckCommitReadiness",
            args.encode_to_vec(),
        ))
        .await?;
    let r = CheckCommitReadinessResult::decode(out.as_slice())
        .map_err(|e| NodeError::Failed(format!("readiness result: {e}")))?;
    println!(
        "Chaincode definition for chaincode '{}', version '{}', sequence '{}' on channel '{}' approval status by org:",
        def.name, def.version, def.sequence, def.channel
    );
    let mut approvals: Vec<_> = r.approvals.into_iter().collect();
    approvals.sort();
    for (org, ok) in approvals {
        println!("{org}: {ok}");
    }
    Ok(())
}

/// Commits a definition once enough organisations approved it.
async fn commit(def: DefinitionArgs, target: PeerTarget) -> Result<(), NodeError> {
    let d = definition(&def)?;
    let mut session = Session::open(&target).await?;
    let inv = lifecycle_invocation(&def.channel, "CommitChaincodeDefinition", d.encode_to_vec());
    let (tx_id, _, block) = session.submit(&inv, vec![]).await?;
    println!(
        "Chaincode definition '{}' sequence {} committed on channel '{}': txid {tx_id}, block {block} (VALID)",
        def.name, def.sequence, def.channel
    );
    Ok(())
}

/// The committed definition of a chaincode, with its approvals.
async fn query_committed(
    channel: String,
    name: String,
    target: PeerTarget,
) -> Result<(), NodeError> {
    let mut session = Session::open(&target).await?;
    let out = session
        .evaluate(&lifecycle_invocation(
            &channel,
            "QueryChaincodeDefinition",
            QueryChaincodeDefinitionArgs { name: name.clone() }.encode_to_vec(),
        ))
        .await?;
    let r = QueryChaincodeDefinitionResult::decode(out.as_slice())
        .map_err(|e| NodeError::Failed(format!("query result: {e}")))?;
    let mut approvals: Vec<_> = r.approvals.into_iter().collect();
    approvals.sort();
    let approvals: Vec<String> = approvals
        .into_iter()
        .map(|(o, ok)| format!("{o}: {ok}"))
        .collect();
    println!("Committed chaincode definition for chaincode '{name}' on channel '{channel}':");
    println!(
        "Version: {}, Sequence: {}, Endorsement Plugin: {}, Validation Plugin: {}, Collections: {}, Approvals: [{}]",
        r.version,
        r.sequence,
        r.endorsement_plugin,
        r.validation_plugin,
        r.collections.map(|c| c.config.len()).unwrap_or(0),
        approvals.join(", ")
    );
    Ok(())
}

/// Every committed definition on a channel.
async fn query_all_committed(channel: String, target: PeerTarget) -> Result<(), NodeError> {
    use medledger_proto::lifecycle::{
        QueryChaincodeDefinitionsArgs, QueryChaincodeDefinitionsResult,
    };
    let out = Session::open(&target)
        .await?
        .evaluate(&lifecycle_invocation(
            &channel,
            "QueryChaincodeDefinitions",
            QueryChaincodeDefinitionsArgs {}.encode_to_vec(),
        ))
        .await?;
    let r = QueryChaincodeDefinitionsResult::decode(out.as_slice())
        .map_err(|e| NodeError::Failed(format!("query result: {e}")))?;
    println!("Committed chaincode definitions on channel '{channel}':");
    for d in r.chaincode_definitions {
        println!(
            "Name: {}, Version: {}, Sequence: {}, Endorsement Plugin: {}, Validation Plugin: {}",
            d.name, d.version, d.sequence, d.endorsement_plugin, d.validation_plugin
        );
    }
    Ok(())
}

/// What the signer's organisation approved.
async fn query_approved(
    channel: String,
    name: String,
    sequence: i64,
    target: PeerTarget,
) -> Result<(), NodeError> {
    use medledger_proto::lifecycle::{
        QueryApprovedChaincodeDefinitionArgs, QueryApprovedChaincodeDefinitionResult,
        chaincode_source,
    };
    let out = Session::open(&target)
        .await?
        .evaluate(&lifecycle_invocation(
            &channel,
            "QueryApprovedChaincodeDefinition",
            QueryApprovedChaincodeDefinitionArgs {
                name: name.clone(),
                sequence,
            }
            .encode_to_vec(),
        ))
        .await?;
    let r = QueryApprovedChaincodeDefinitionResult::decode(out.as_slice())
        .map_err(|e| NodeError::Failed(format!("query result: {e}")))?;
    let package = match r.source.and_then(|s| s.r#type) {
        Some(chaincode_source::Type::LocalPackage(l)) => l.package_id,
        _ => "<unavailable>".into(),
    };
    println!("Approved chaincode definition for chaincode '{name}' on channel '{channel}':");
    println!(
        "sequence: {}, version: {}, init-required: {}, package-id: {package}, endorsement plugin: {}, validation plugin: {}",
        r.sequence, r.version, r.init_required, r.endorsement_plugin, r.validation_plugin
    );
    Ok(())
}

/// Writes an installed package to `<dir>/<package id>.tar.gz`, as Fabric's CLI does.
async fn get_installed_package(
    package_id: String,
    dir: PathBuf,
    target: PeerTarget,
) -> Result<(), NodeError> {
    use medledger_proto::lifecycle::{
        GetInstalledChaincodePackageArgs, GetInstalledChaincodePackageResult,
    };
    let resp = Session::open(&target)
        .await?
        .ask_peer(
            crate::execution::lifecycle::LIFECYCLE,
            vec![
                b"GetInstalledChaincodePackage".to_vec(),
                GetInstalledChaincodePackageArgs {
                    package_id: package_id.clone(),
                }
                .encode_to_vec(),
            ],
        )
        .await?;
    let r = GetInstalledChaincodePackageResult::decode(resp.payload.as_slice())
        .map_err(|e| NodeError::Failed(format!("installed package: {e}")))?;
    let path = dir.join(format!("{package_id}.tar.gz"));
    std::fs::write(&path, &r.chaincode_install_package).map_err(|e| NodeError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    println!("Package written to {}", path.display());
    Ok(())
}

/// The definition the flags describe, as `_lifecycle` takes it.
pub(super) fn definition(d: &DefinitionArgs) -> Result<CommitChaincodeDefinitionArgs, NodeError> {
    let validation_parameter = match (&d.signature_policy, &d.channel_config_policy) {
        (Some(_), Some(_)) => {
            return Err(NodeError::Failed(
                "give --signature-policy or --channel-config-policy, not both".into(),
            ));
        }
        (Some(p), None) => ApplicationPolicy {
            r#type: Some(application_policy::Type::SignaturePolicy(
                parse_signature_policy(p)
                    .map_err(|e| NodeError::Usage(format!("--signature-policy: {e}")))?,
            )),
        }
        .encode_to_vec(),
        (None, Some(p)) => ApplicationPolicy {
            r#type: Some(application_policy::Type::ChannelConfigPolicyReference(
                p.clone(),
            )),
        }
        .encode_to_vec(),
        (None, None) => Vec::new(),
    };
    let collections = match &d.collections_config {
        Some(path) => {
            let json = std::fs::read_to_string(path).map_err(|e| NodeError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Some(package_from_json(&json).map_err(|e| NodeError::Usage(e.to_string()))?)
        }
        None => None,
    };
    Ok(CommitChaincodeDefinitionArgs {
        sequence: d.sequence,
        name: d.name.clone(),
        version: d.version.clone(),
        endorsement_plugin: String::new(),
        validation_plugin: String::new(),
        validation_parameter,
        collections,
        init_required: false,
    })
}

pub(super) fn lifecycle_invocation(channel: &str, function: &str, args: Vec<u8>) -> Invocation {
    Invocation {
        channel: channel.to_owned(),
        chaincode: crate::execution::lifecycle::LIFECYCLE.into(),
        args: vec![function.as_bytes().to_vec(), args],
        transient: HashMap::new(),
        is_init: false,
    }
}
