//! FHIR R4 views of a verified provenance proof, for audit systems: record versions, shares and
//! erasures as `Provenance` (with the transaction's signatures), reads as `AuditEvent`s shaped as
//! IHE BALP's Read event, consents as `Consent`. Only what the proof verified goes in, so the
//! resources say nothing a third party could not check against the ledger. The identifier
//! systems and the BALP building blocks are public: the peer's audit feed
//! (`medledger_peer::services::audit`) writes its live AuditEvents with the same ones, so an
//! audit repository sees one vocabulary from both.

use base64::Engine;
use medledger_common::crypto::sha256;
use medledger_common::proof::{ProvenPrivateClaim, ProvenTransaction, Verified};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::records::{AccessEntry, RecordEntry};
use crate::sharing::{Consent, Share};

/// Identifier systems for what MedLedger names (URNs: they are not resolvable web addresses).
pub const RECORD_SYSTEM: &str = "urn:medledger:record";
const RECORD_VERSION_SYSTEM: &str = "urn:medledger:record-version";
pub const PATIENT_SYSTEM: &str = "urn:medledger:patient";
pub const ORGANISATION_SYSTEM: &str = "urn:medledger:msp";
pub const CONSENT_SYSTEM: &str = "urn:medledger:consent";
pub const CERTIFICATE_SYSTEM: &str = "urn:medledger:certificate";
/// ISO 21089 record lifecycle events, as HL7 terminology publishes them.
const LIFECYCLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle";
/// ASTM E1762 signature types.
const SIGNATURE_TYPE_SYSTEM: &str = "urn:iso-astm:E1762-95:2013";
pub const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// The IHE Basic Audit Log Patterns profile of a read.
pub const BALP_READ_PROFILE: &str =
    "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read";
/// DICOM's code system (audit roles and event types).
pub const DICOM_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// FHIR's RESTful interactions (BALP's AuditEvent subtypes).
pub const RESTFUL_INTERACTION_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";
pub const ENTITY_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
pub const OBJECT_ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// HL7 v3 PurposeOfUse codes a consent or access purpose may be written as.
const PURPOSES_OF_USE: &[(&str, &str)] = &[
    ("TREAT", "treatment"),
    ("ETREAT", "emergency treatment"),
    ("HPAYMT", "healthcare payment"),
    ("HOPERAT", "healthcare operations"),
    ("HRESCH", "healthcare research"),
    ("PATRQT", "patient requested"),
    ("PUBHLTH", "public health"),
    ("HLEGAL", "legal"),
];

/// Why a verified claim could not be written as FHIR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    #[error("{what} written in transaction {tx_id} is not a MedLedger {what}: {reason}")]
    Value {
        what: &'static str,
        tx_id: String,
        reason: String,
    },
    #[error("timestamp {0} is out of range")]
    Time(i64),
}

/// A FHIR R4 `Bundle` (type `collection`) of everything `verified` proves about medical
/// records on `channel`, written by the medical chaincode `namespace`: writes by any other
/// chaincode are left out, whatever their keys look like (another chaincode could write a key
/// named like a record entry).
pub fn bundle(channel: &str, namespace: &str, verified: &Verified) -> Result<Value, FhirError> {
    let mut records = Vec::new();
    let mut reads = Vec::new();
    let mut shares = Vec::new();
    let mut consents: Vec<(Consent, &ProvenTransaction)> = Vec::new();
    for c in verified
        .claims
        .iter()
        .filter(|c| c.claim.namespace == namespace)
    {
        let key = c.claim.key.as_str();
        let value = c.claim.value.as_bytes();
        let tx = &c.tx;
        if key.starts_with("record/") && !key[7..].contains('/') {
            records.push((parse::<RecordEntry>("record entry", value, tx)?, tx));
        } else if key.starts_with("\u{0}access\u{0}") {
            reads.push((parse::<AccessEntry>("access log entry", value, tx)?, tx));
        } else if key.starts_with("share/") {
            shares.push((parse::<Share>("share", value, tx)?, tx));
        } else if key.starts_with("\u{0}consent\u{0}") {
            let consent = parse::<Consent>("consent", value, tx)?;
            // A consent's newest proven state is the one to show.
            match consents.iter_mut().find(|(c, _)| c.id == consent.id) {
                Some(slot) if slot.1.block <= tx.block => *slot = (consent, tx),
                Some(_) => {}
                None => consents.push((consent, tx)),
            }
        }
    }
    let patient_of = |record: &str| {
        records
            .iter()
            .find(|(r, _)| r.id == record)
            .map(|(r, _)| r.patient_id.clone())
    };

    let mut entries = Vec::new();
    for (r, tx) in &records {
        entries.push(record_provenance(channel, r, tx)?);
    }
    for (s, tx) in &shares {
        entries.push(share_provenance(channel, s, tx)?);
    }
    for erased in verified
        .private_claims
        .iter()
        .filter(|p| p.claim.erased && p.claim.namespace == namespace)
    {
        let revoked: Vec<&str> = consents
            .iter()
            .filter(|(c, tx)| c.revoked && tx.tx_id == erased.tx.tx_id)
            .map(|(c, _)| c.id.as_str())
            .collect();
        entries.push(erasure_provenance(channel, erased, &revoked)?);
    }
    for (a, tx) in &reads {
        entries.push(read_audit_event(
            channel,
            a,
            patient_of(&a.record_id).as_deref(),
            tx,
        )?);
    }
    for (c, tx) in &consents {
        entries.push(consent(channel, c, tx)?);
    }
    Ok(json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": entries
            .into_iter()
            .map(|(id, resource)| json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource}))
            .collect::<Vec<_>>(),
    }))
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: &[u8],
    tx: &ProvenTransaction,
) -> Result<T, FhirError> {
    serde_json::from_slice(value).map_err(|e| FhirError::Value {
        what,
        tx_id: tx.tx_id.clone(),
        reason: e.to_string(),
    })
}

/// A FHIR `instant` (seconds precision, UTC).
fn instant(seconds: i64) -> Result<String, FhirError> {
    instant_millis(seconds.saturating_mul(1000)).map_err(|_| FhirError::Time(seconds))
}

/// A FHIR `instant` with milliseconds, UTC (also an RFC 5424 syslog TIMESTAMP, which allows at
/// most six fraction digits: this writes at most three, none for a whole second).
pub fn instant_millis(millis: i64) -> Result<String, FhirError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(FhirError::Time(millis.div_euclid(1000)))
}

/// A stable resource id (a UUID-shaped digest of what the resource is about), so exporting the
/// same proof twice gives the same resources.
pub fn resource_id(parts: &[&str]) -> String {
    let h = hex::encode(sha256(parts.join("\u{0}").as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where on the ledger a resource's facts are (`meta.source`).
fn ledger_source(channel: &str, tx: &ProvenTransaction) -> String {
    format!("urn:medledger:{channel}:block:{}:tx:{}", tx.block, tx.tx_id)
}

/// An organisation by its MSP id.
pub fn organisation(msp: &str) -> Value {
    json!({"identifier": {"system": ORGANISATION_SYSTEM, "value": msp}, "display": msp})
}

/// A person or node by its certificate subject, within its organisation.
pub fn member(msp: &str, subject: &str) -> Value {
    json!({
        "identifier": {"system": format!("{ORGANISATION_SYSTEM}:{msp}"), "value": subject},
        "display": format!("{subject} ({msp})"),
    })
}

/// A record by its id.
pub fn record_ref(id: &str) -> Value {
    json!({"identifier": {"system": RECORD_SYSTEM, "value": id}})
}

fn version_ref(id: &str, version: u32) -> Value {
    json!({"identifier": {"system": RECORD_VERSION_SYSTEM, "value": format!("{id}/v{version}")}})
}

fn lifecycle(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": LIFECYCLE_SYSTEM, "code": code, "display": display}]})
}

/// The agents of a transaction: its creator as `role`, its endorsing peers as verifiers.
fn agents(tx: &ProvenTransaction, role: &str) -> Vec<Value> {
    let participant = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
    let mut out = vec![json!({
        "type": {"coding": [{"system": participant, "code": role}]},
        "who": member(&tx.creator_msp, &tx.creator_subject),
        "onBehalfOf": organisation(&tx.creator_msp),
    })];
    out.extend(tx.endorsements.iter().map(|e| {
        json!({
            "type": {"coding": [{"system": participant, "code": "verifier"}]},
            "who": member(&e.msp, &e.subject),
            "onBehalfOf": organisation(&e.msp),
        })
    }));
    out
}

/// The transaction's signatures: the creator's over the transaction, each endorsing peer's over
/// the proposal response (DER ECDSA P-256, as in the block).
fn signatures(tx: &ProvenTransaction) -> Result<Vec<Value>, FhirError> {
    let when = instant(tx.timestamp)?;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec![json!({
        "type": [{"system": SIGNATURE_TYPE_SYSTEM, "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}],
        "when": when,
        "who": member(&tx.creator_msp, &tx.creator_subject),
        "sigFormat": "application/octet-stream",
        "data": b64(&tx.creator_signature),
    })];
    for e in &tx.endorsements {
        out.push(json!({
            "type": [{"system": SIGNATURE_TYPE_SYSTEM, "code": "1.2.840.10065.1.12.1.6", "display": "Validation Signature"}],
            "when": when,
            "who": member(&e.msp, &e.subject),
            "sigFormat": "application/octet-stream",
            "data": b64(&e.signature),
        }));
    }
    Ok(out)
}

fn record_provenance(
    channel: &str,
    r: &RecordEntry,
    tx: &ProvenTransaction,
) -> Result<(String, Value), FhirError> {
    let id = resource_id(&["provenance", &tx.tx_id, &r.id]);
    let mut p = json!({
        "resourceType": "Provenance",
        "id": id,
        "meta": {"source": ledger_source(channel, tx)},
        "target": [
            {"identifier": {"system": RECORD_SYSTEM, "value": r.id},
             "display": format!("{} {} version {} (contentHash {})", r.resource_type, r.id, r.version, r.content_hash)},
            version_ref(&r.id, r.version),
        ],
        "recorded": instant(tx.timestamp)?,
        "activity": if r.version == 1 { lifecycle("originate", "Originate/Retain Record Lifecycle Event") }
                    else { lifecycle("amend", "Amend (Update) Record Lifecycle Event") },
        "agent": agents(tx, "author"),
        "signature": signatures(tx)?,
    });
    if r.version > 1 {
        p["entity"] = json!([{"role": "revision", "what": version_ref(&r.id, r.version - 1)}]);
    }
    if let Some(reason) = &r.amend_reason {
        p["reason"] = json!([{"text": reason}]);
    }
    Ok((id, p))
}

fn share_provenance(
    channel: &str,
    s: &Share,
    tx: &ProvenTransaction,
) -> Result<(String, Value), FhirError> {
    let id = resource_id(&["provenance", &tx.tx_id, &s.record_id, &s.grantee_msp]);
    Ok((
        id.clone(),
        json!({
            "resourceType": "Provenance",
            "id": id,
            "meta": {"source": ledger_source(channel, tx)},
            "target": [{
                "identifier": {"system": RECORD_VERSION_SYSTEM, "value": format!("{}/v{}", s.record_id, s.version)},
                "display": format!("record {} version {} shared with {} under consent {}", s.record_id, s.version, s.grantee_msp, s.consent_id),
            }],
            "recorded": instant(tx.timestamp)?,
            "activity": lifecycle("disclose", "Disclose Record Lifecycle Event"),
            "agent": agents(tx, "author"),
            "entity": [{"role": "source", "what": version_ref(&s.record_id, s.version)}],
            "signature": signatures(tx)?,
        }),
    ))
}

fn erasure_provenance(
    channel: &str,
    erased: &ProvenPrivateClaim,
    revoked_consents: &[&str],
) -> Result<(String, Value), FhirError> {
    let c = &erased.claim;
    let tx = &erased.tx;
    let id = resource_id(&["erasure", &tx.tx_id, &c.collection, &c.key_hash]);
    let what = c.key.as_deref().unwrap_or(&c.key_hash);
    let mut p = json!({
        "resourceType": "Provenance",
        "id": id,
        "meta": {"source": ledger_source(channel, tx)},
        "target": [{
            "identifier": {"system": format!("urn:medledger:private:{}", c.collection), "value": what},
            "display": format!("private value {what} of collection {} (key hash {})", c.collection, c.key_hash),
        }],
        "recorded": instant(tx.timestamp)?,
        "activity": lifecycle("destroy", "Destroy/Delete Record Lifecycle Event"),
        "agent": agents(tx, "author"),
        "signature": signatures(tx)?,
    });
    if !revoked_consents.is_empty() {
        p["reason"] = json!([{"text": format!("consent {} revoked", revoked_consents.join(", "))}]);
    }
    Ok((id, p))
}

/// A coding for a purpose: the v3 PurposeOfUse code it names, else the text alone.
pub fn purpose_coding(purpose: &str) -> Value {
    let v3 = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
    match PURPOSES_OF_USE
        .iter()
        .find(|(code, display)| purpose.eq_ignore_ascii_case(code) || purpose == *display)
    {
        Some((code, display)) => json!({"system": v3, "code": code, "display": display}),
        None => json!({"display": purpose}),
    }
}

/// BALP's `purposeOfEvent`: the purpose as a v3 PurposeOfUse coding where it names one, and as
/// text.
pub fn purpose_of_event(purpose: &str) -> Value {
    json!([{"coding": [purpose_coding(purpose)], "text": purpose}])
}

/// BALP's event type for every RESTful pattern (`rest`) with the interaction as subtype
/// (`read`, `search-type`, `create`, `update`...).
pub fn rest_type_and_subtype(interaction: &str) -> (Value, Value) {
    (
        json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"}),
        json!([{"system": RESTFUL_INTERACTION_SYSTEM, "code": interaction, "display": interaction}]),
    )
}

/// The agent that served the request (DICOM's Destination Role ID), never the requestor.
pub fn server_agent(who: Value) -> Value {
    json!({
        "type": {"coding": [{"system": DICOM_SYSTEM, "code": "110152", "display": "Destination Role ID"}]},
        "who": who,
        "requestor": false,
    })
}

/// `source`: who observed the event, an application server.
pub fn application_server_source(observer: Value) -> Value {
    json!({
        "observer": observer,
        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
    })
}

/// The patient an event is about, as a BALP entity.
pub fn patient_entity(patient: &str) -> Value {
    json!({
        "what": {"identifier": {"system": PATIENT_SYSTEM, "value": patient}},
        "type": {"system": ENTITY_TYPE_SYSTEM, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE_SYSTEM, "code": "1", "display": "Patient"},
    })
}

/// The data an event is about (a record, a version, a consent...) as a BALP entity.
pub fn domain_resource_entity(what: Value) -> Value {
    json!({
        "what": what,
        "type": {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE_SYSTEM, "code": "4", "display": "Domain Resource"},
    })
}

fn read_audit_event(
    channel: &str,
    a: &AccessEntry,
    patient: Option<&str>,
    tx: &ProvenTransaction,
) -> Result<(String, Value), FhirError> {
    let id = resource_id(&["audit", &tx.tx_id, &a.record_id]);
    let mut reader = json!({
        "type": {"coding": [{"system": PARTICIPATION_SYSTEM, "code": "IRCP", "display": "information recipient"}]},
        "who": member(&a.reader_msp, &a.reader_subject),
        "requestor": true,
    });
    if let Some(role) = &a.reader_role {
        reader["role"] = json!([{"text": role}]);
    }
    let mut agents = vec![reader];
    agents.extend(
        tx.endorsements
            .iter()
            .map(|e| server_agent(member(&e.msp, &e.subject))),
    );
    let mut entities: Vec<Value> = patient.map(patient_entity).into_iter().collect();
    let mut record = domain_resource_entity(version_ref(&a.record_id, a.version));
    record["description"] = json!(format!(
        "record {} version {}, read from the {} copy",
        a.record_id, a.version, a.via
    ));
    entities.push(record);
    let observer = tx
        .endorsements
        .first()
        .map(|e| member(&e.msp, &e.subject))
        .unwrap_or_else(|| organisation(&a.reader_msp));
    let (event_type, subtype) = rest_type_and_subtype("read");
    Ok((
        id.clone(),
        json!({
            "resourceType": "AuditEvent",
            "id": id,
            "meta": {"profile": [BALP_READ_PROFILE], "source": ledger_source(channel, tx)},
            "type": event_type,
            "subtype": subtype,
            "action": "R",
            "recorded": instant(tx.timestamp)?,
            "outcome": "0",
            "purposeOfEvent": purpose_of_event(&a.purpose),
            "agent": agents,
            "source": application_server_source(observer),
            "entity": entities,
        }),
    ))
}

fn consent(
    channel: &str,
    c: &Consent,
    tx: &ProvenTransaction,
) -> Result<(String, Value), FhirError> {
    let id = resource_id(&["consent", &c.patient_id, &c.id]);
    let end = match c.revoked_at {
        Some(r) if r < c.expires_at => r,
        _ => c.expires_at,
    };
    let mut grantee = organisation(&c.grantee_msp);
    if let Some(role) = &c.grantee_role {
        grantee["display"] = json!(format!("{} ({role}s only)", c.grantee_msp));
    }
    let mut provision = json!({
        "type": "permit",
        "period": {"start": instant(c.granted_at)?, "end": instant(end)?},
        "actor": [{
            "role": {"coding": [{"system": PARTICIPATION_SYSTEM, "code": "IRCP", "display": "information recipient"}]},
            "reference": grantee,
        }],
        "purpose": [purpose_coding(&c.purpose)],
    });
    if !c.scope.record_types.is_empty() {
        provision["class"] = json!(
            c.scope
                .record_types
                .iter()
                .map(|t| json!({"system": "http://hl7.org/fhir/resource-types", "code": t}))
                .collect::<Vec<_>>()
        );
    }
    if !c.scope.record_ids.is_empty() {
        provision["data"] = json!(
            c.scope
                .record_ids
                .iter()
                .map(|r| json!({"meaning": "instance", "reference": record_ref(r)}))
                .collect::<Vec<_>>()
        );
    }
    Ok((
        id.clone(),
        json!({
            "resourceType": "Consent",
            "id": id,
            "meta": {"source": ledger_source(channel, tx)},
            "identifier": [{"system": CONSENT_SYSTEM, "value": c.id}],
            "status": if c.revoked { "inactive" } else { "active" },
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy", "display": "Privacy Consent"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
            "patient": {"identifier": {"system": PATIENT_SYSTEM, "value": c.patient_id}},
            "dateTime": instant(c.granted_at)?,
            "performer": [{"identifier": {"system": PATIENT_SYSTEM, "value": c.patient_id}}],
            "organization": [organisation(&c.granted_by_msp)],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN", "display": "opt-in"}]},
            "provision": provision,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_common::proof::{ProvenClaim, WriteClaim};

    fn claim(namespace: &str) -> ProvenClaim {
        let entry = serde_json::json!({
            "id": "R-1", "patientId": "P-1", "resourceType": "Observation", "custodian": "H1MSP",
            "contentHash": "00", "version": 1, "authorMsp": "H1MSP", "authorSubject": "CN=x",
            "createdAt": 1, "updatedAt": 1, "txId": "t"
        });
        ProvenClaim {
            claim: WriteClaim {
                block: 1,
                tx_id: "t".into(),
                namespace: namespace.into(),
                key: "record/R-1".into(),
                value: entry.to_string(),
            },
            tx: ProvenTransaction {
                block: 1,
                tx_id: "t".into(),
                timestamp: 1_800_000_000,
                creator_msp: "H1MSP".into(),
                creator_subject: "CN=x".into(),
                creator_signature: vec![1],
                endorsements: vec![],
                block_signers: 3,
            },
        }
    }

    #[test]
    fn only_the_medical_chaincodes_writes_become_fhir() {
        let verified = Verified {
            claims: vec![claim("kv"), claim("medical")],
            private_claims: vec![],
        };
        let b = bundle("ch", "medical", &verified).unwrap();
        let entries = b["entry"].as_array().unwrap();
        assert_eq!(
            entries.len(),
            1,
            "the kv chaincode's look-alike is left out: {b}"
        );
        assert_eq!(entries[0]["resource"]["resourceType"], "Provenance");
    }
}
