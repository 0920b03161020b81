//! What an audited call becomes: the facts an auditor needs, copied out of the call on the
//! endorsement path ([`AuditRecord::of`], cheap and bounded), and the FHIR R4 `AuditEvent` shaped
//! as IHE BALP (Basic Audit Log Patterns) built from them later, off that path
//! ([`audit_event`]). The vocabulary (identifier systems, agents, entities) is the medical
//! crate's, so live events and those exported from proofs read the same.

use base64::Engine;
use medledger_medical_chaincode::fhir::{
    self as mf, CERTIFICATE_SYSTEM, CONSENT_SYSTEM, DICOM_SYSTEM, ENTITY_TYPE_SYSTEM,
    OBJECT_ROLE_SYSTEM, PARTICIPATION_SYSTEM,
};
use serde_json::{Value, json};

use crate::execution::plugins::{AuditCall, AuditOutcome, AuditedRequest};

/// Longest identifier, subject or purpose copied from a call (the chaincode allows 64-character
/// ids and 256-character purposes; a refused call may carry anything).
pub const MAX_FIELD_CHARS: usize = 256;
/// Longest chaincode or refusal message copied.
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// Largest success payload searched for the patient (a record entry, a consent, a share). A
/// record read's payload (up to 1 MiB of content) is not parsed whole: its leading `record`
/// object is read on its own.
pub const MAX_PARSED_PAYLOAD: usize = 64 * 1024;

const BALP_PROFILE_BASE: &str =
    "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";
const BALP_ENTITY_TYPE_SYSTEM: &str =
    "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const TX_SYSTEM: &str = "urn:medledger:tx";

/// How a call ended, as the audit event says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The chaincode's error status and message (an access rule saying no is one of these).
    Failed {
        status: i32,
        message: String,
    },
    /// The peer refused the proposal before running it.
    Refused {
        reason: String,
    },
}

/// The facts of one audited call, owned and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub request: AuditedRequest,
    /// When the peer finished with the call (Unix milliseconds).
    pub at_millis: i64,
    pub channel: String,
    pub tx_id: String,
    pub chaincode: String,
    pub function: String,
    pub record_id: Option<String>,
    pub patient_id: Option<String>,
    /// Another object the call names: (identifier system, id), e.g. a consent or a certificate.
    pub object: Option<(&'static str, String)>,
    pub purpose: Option<String>,
    /// For a query: the function and its arguments.
    pub query: Option<Vec<String>>,
    pub client_msp: String,
    pub client_subject: String,
    pub client_role: Option<String>,
    pub client_address: Option<String>,
    pub outcome: Outcome,
}

/// The peer that observed the calls.
#[derive(Debug, Clone)]
pub struct AuditSource {
    /// The peer's name (its configuration's `id`).
    pub peer_id: String,
    pub msp_id: String,
    /// The subject of the peer's signing certificate.
    pub subject: String,
    /// Where the peer listens.
    pub address: String,
}

/// BALP's patterns, chosen by what the function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Create,
    Read,
    Update,
    Query,
    /// A function this mapping does not know: an `operation`, action E, no BALP profile claimed.
    Other,
}

impl Shape {
    /// The medical chaincode's functions, by what they do to the data they name.
    pub fn of(function: &str) -> Self {
        match function {
            "CreateRecord" | "RequestAccess" | "GrantConsent" | "ShareRecord"
            | "IssueCertificate" => Self::Create,
            "AmendRecord" | "RevokeConsent" | "RevokeCertificate" => Self::Update,
            "GetRecord"
            | "ReadRecord"
            | "ReadSharedRecord"
            | "GetRecordProvenance"
            | "VerifyCertificate"
            | "CertificateHistory" => Self::Read,
            "ListRecordsByPatient" | "ListConsents" => Self::Query,
            _ => Self::Other,
        }
    }
    /// FHIR's restful interaction (the event's subtype).
    pub fn interaction(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Query => "search-type",
            Self::Other => "operation",
        }
    }
    /// The AuditEvent's `action`.
    pub fn action(self) -> &'static str {
        match self {
            Self::Create => "C",
            Self::Read => "R",
            Self::Update => "U",
            Self::Query | Self::Other => "E",
        }
    }
    fn profile_name(self) -> Option<&'static str> {
        match self {
            Self::Create => Some("Create"),
            Self::Read => Some("Read"),
            Self::Update => Some("Update"),
            Self::Query => Some("Query"),
            Self::Other => None,
        }
    }
}

/// At most `max` characters of `s` (on a character boundary).
fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

fn arg(args: &[Vec<u8>], i: usize) -> Option<String> {
    args.get(i).map(|a| {
        bounded(
            &String::from_utf8_lossy(&a[..a.len().min(4 * MAX_FIELD_CHARS)]),
            MAX_FIELD_CHARS,
        )
    })
}

/// A string field of a small JSON object argument (the chaincode refuses larger ones anyway).
fn json_field(bytes: &[u8], field: &str) -> Option<String> {
    if bytes.len() > MAX_PARSED_PAYLOAD {
        return None;
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get(field)?.as_str().map(|s| bounded(s, MAX_FIELD_CHARS))
}

/// The patient a success payload names: `patientId` of a record entry, consent or share, or of
/// the `record` object leading a record read (read alone, the content after it is not parsed).
fn payload_patient(payload: &[u8]) -> Option<String> {
    const READ_PREFIX: &[u8] = b"{\"record\":";
    if let Some(rest) = payload.strip_prefix(READ_PREFIX) {
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        let entry = values.next()?.ok()?;
        return entry
            .get("patientId")?
            .as_str()
            .map(|s| bounded(s, MAX_FIELD_CHARS));
    }
    json_field(payload, "patientId")
}

impl AuditRecord {
    /// Copies what an auditor needs out of a call: bounded, never the record's content.
    pub fn of(call: &AuditCall<'_>, at_millis: i64) -> Self {
        let function = arg(call.args, 0).unwrap_or_default();
        let params = call.args.get(1..).unwrap_or_default();
        let p = |i: usize| arg(params, i);
        let (mut record_id, mut patient_id, mut object, mut purpose, mut query) =
            (None, None, None, None, None);
        match function.as_str() {
            "CreateRecord" => {
                let json = params.first().map(Vec::as_slice).unwrap_or_default();
                record_id = json_field(json, "id");
                patient_id = json_field(json, "patientId");
            }
            "RequestAccess" => {
                record_id = p(0);
                purpose = p(1);
            }
            "AmendRecord"
            | "GetRecord"
            | "ReadRecord"
            | "ReadSharedRecord"
            | "GetRecordProvenance" => record_id = p(0),
            "ShareRecord" => {
                record_id = p(0);
                object = p(1).map(|c| (CONSENT_SYSTEM, c));
            }
            "ListRecordsByPatient" | "ListConsents" => {
                patient_id = p(0).filter(|s| !s.is_empty());
                query = Some(
                    std::iter::once(function.clone())
                        .chain((0..params.len().min(3)).filter_map(p))
                        .collect(),
                );
            }
            "GrantConsent" => {
                let json = params.first().map(Vec::as_slice).unwrap_or_default();
                object = json_field(json, "id").map(|c| (CONSENT_SYSTEM, c));
                purpose = json_field(json, "purpose");
            }
            "RevokeConsent" => object = p(0).map(|c| (CONSENT_SYSTEM, c)),
            "IssueCertificate" => {
                let json = params.first().map(Vec::as_slice).unwrap_or_default();
                object = json_field(json, "id").map(|c| (CERTIFICATE_SYSTEM, c));
            }
            "VerifyCertificate" | "RevokeCertificate" | "CertificateHistory" => {
                object = p(0).map(|c| (CERTIFICATE_SYSTEM, c));
            }
            _ => {}
        }
        // Only these answers name the patient (a record entry, a consent, a share); the others
        // are not parsed at all.
        let answer_names_patient = matches!(
            function.as_str(),
            "AmendRecord"
                | "GetRecord"
                | "ReadRecord"
                | "ReadSharedRecord"
                | "ShareRecord"
                | "GrantConsent"
                | "RevokeConsent"
        );
        let outcome = match call.outcome {
            AuditOutcome::Success { payload } => {
                if patient_id.is_none() && answer_names_patient {
                    patient_id = payload_patient(payload);
                }
                Outcome::Success
            }
            AuditOutcome::Failed { status, message } => Outcome::Failed {
                status,
                message: bounded(message, MAX_MESSAGE_CHARS),
            },
            AuditOutcome::Refused { reason } => Outcome::Refused {
                reason: bounded(reason, MAX_MESSAGE_CHARS),
            },
        };
        Self {
            request: call.request,
            at_millis,
            channel: bounded(call.channel, MAX_FIELD_CHARS),
            tx_id: bounded(call.tx_id, MAX_FIELD_CHARS),
            chaincode: bounded(call.chaincode, MAX_FIELD_CHARS),
            function,
            record_id,
            patient_id,
            object,
            purpose,
            query,
            client_msp: bounded(call.client_msp, MAX_FIELD_CHARS),
            client_subject: bounded(call.client_subject, MAX_FIELD_CHARS),
            client_role: call.client_role.map(|r| bounded(r, MAX_FIELD_CHARS)),
            client_address: call.client_address.map(|a| a.to_string()),
            outcome,
        }
    }
}

/// The peer as an agent or observer.
fn peer_member(source: &AuditSource) -> Value {
    mf::member(&source.msp_id, &source.subject)
}

/// `meta.source` of an event: which peer queued it, under which sequence number (increasing per
/// peer, so a repository can order a peer's events and drop a resent one).
pub fn event_source(peer_id: &str, seq: u64) -> String {
    format!("urn:medledger:peer:{peer_id}:audit:{seq}")
}

/// The FHIR R4 AuditEvent (IHE BALP) for one call, the `seq`-th event this peer queued.
pub fn audit_event(r: &AuditRecord, source: &AuditSource, seq: u64) -> Value {
    let shape = Shape::of(&r.function);
    let (event_type, subtype) = mf::rest_type_and_subtype(shape.interaction());
    let (outcome, outcome_desc) = match &r.outcome {
        Outcome::Success => ("0", None),
        Outcome::Failed { status, message } => {
            ("4", Some(format!("chaincode answered {status}: {message}")))
        }
        Outcome::Refused { reason } => ("8", Some(format!("refused by the peer: {reason}"))),
    };
    // Reads and queries disclose to the requestor; the other calls are authored by them.
    let (user_code, user_display) = match shape {
        Shape::Read | Shape::Query => ("IRCP", "information recipient"),
        _ => ("AUT", "author"),
    };
    let mut user = json!({
        "type": {"coding": [{"system": PARTICIPATION_SYSTEM, "code": user_code, "display": user_display}]},
        "who": mf::member(&r.client_msp, &r.client_subject),
        "name": r.client_subject,
        "requestor": true,
    });
    if let Some(role) = &r.client_role {
        user["role"] = json!([{"text": role}]);
    }
    let mut client = json!({
        "type": {"coding": [{"system": DICOM_SYSTEM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"display": r.client_address.as_deref().unwrap_or("address not known")},
        "requestor": false,
    });
    if let Some(a) = &r.client_address {
        client["network"] = json!({"address": a, "type": "2"});
    }
    let mut server = mf::server_agent(peer_member(source));
    server["network"] = json!({"address": source.address, "type": "1"});

    let mut entities = Vec::new();
    if let Some(p) = &r.patient_id {
        entities.push(mf::patient_entity(p));
    }
    if let Some(id) = &r.record_id {
        entities.push(mf::domain_resource_entity(mf::record_ref(id)));
    }
    if let Some((system, id)) = &r.object {
        entities.push(mf::domain_resource_entity(
            json!({"identifier": {"system": system, "value": id}}),
        ));
    }
    if let Some(q) = &r.query {
        let text = serde_json::to_string(q).unwrap_or_default();
        entities.push(json!({
            "type": {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE_SYSTEM, "code": "24", "display": "Query"},
            "query": base64::engine::general_purpose::STANDARD.encode(&text),
            "description": text,
        }));
    }
    let has_data = r.record_id.is_some() || r.object.is_some();
    entities.push(json!({
        "what": {"identifier": {"system": TX_SYSTEM, "value": r.tx_id}},
        "type": {"system": BALP_ENTITY_TYPE_SYSTEM, "code": "XrequestId"},
        "detail": [
            {"type": "channel", "valueString": r.channel},
            {"type": "chaincode", "valueString": r.chaincode},
            {"type": "function", "valueString": r.function},
            {"type": "request", "valueString": r.request.name()},
        ],
    }));
    // A profile is claimed only when its required entity is there.
    let profile = shape.profile_name().filter(|_| match shape {
        Shape::Query => r.query.is_some(),
        _ => has_data || r.patient_id.is_some(),
    });
    let mut observed = mf::application_server_source(peer_member(source));
    observed["site"] = json!(r.channel);
    let mut meta = json!({"source": event_source(&source.peer_id, seq)});
    if let Some(name) = profile {
        let patient = if r.patient_id.is_some() {
            "Patient"
        } else {
            ""
        };
        meta["profile"] = json!([format!("{BALP_PROFILE_BASE}{patient}{name}")]);
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": mf::resource_id(&["audit", &source.peer_id, &seq.to_string(), &r.tx_id]),
        "meta": meta,
        "type": event_type,
        "subtype": subtype,
        "action": shape.action(),
        "recorded": recorded(r.at_millis),
        "outcome": outcome,
        "agent": [user, client, server],
        "source": observed,
        "entity": entities,
    });
    if let Some(d) = outcome_desc {
        event["outcomeDesc"] = json!(d);
    }
    if let Some(p) = &r.purpose {
        event["purposeOfEvent"] = mf::purpose_of_event(p);
    }
    event
}

/// `recorded`: the call's time; a clock outside FHIR's range is written as the epoch rather than
/// losing the event.
fn recorded(millis: i64) -> String {
    mf::instant_millis(millis).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The event written in place of calls that could not be queued: DICOM's Security Alert "Audit
/// Recording Stopped", saying how many and over which time, so the gap is in the trail itself.
pub fn gap_event(
    source: &AuditSource,
    seq: u64,
    lost: u64,
    first_millis: i64,
    last_millis: i64,
    bound: usize,
) -> Value {
    json!({
        "resourceType": "AuditEvent",
        "id": mf::resource_id(&["audit-gap", &source.peer_id, &seq.to_string()]),
        "meta": {"source": event_source(&source.peer_id, seq)},
        "type": {"system": DICOM_SYSTEM, "code": "110113", "display": "Security Alert"},
        "subtype": [{"system": DICOM_SYSTEM, "code": "110133", "display": "Audit Recording Stopped"}],
        "action": "E",
        "recorded": recorded(last_millis),
        "period": {"start": recorded(first_millis), "end": recorded(last_millis)},
        "outcome": "8",
        "outcomeDesc": format!(
            "{lost} audited call(s) between {} and {} were not recorded: the peer's audit queue held its bound of {bound} undelivered events",
            recorded(first_millis),
            recorded(last_millis)
        ),
        "agent": [mf::server_agent(peer_member(source))],
        "source": mf::application_server_source(peer_member(source)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> AuditSource {
        AuditSource {
            peer_id: "peer0.hospital1".into(),
            msp_id: "Hospital1MSP".into(),
            subject: "CN=peer0.hospital1".into(),
            address: "127.0.0.1:7051".into(),
        }
    }

    fn call<'a>(args: &'a [Vec<u8>], outcome: AuditOutcome<'a>) -> AuditCall<'a> {
        AuditCall {
            request: AuditedRequest::Evaluate,
            channel: "medchannel",
            tx_id: "tx1",
            chaincode: "medical",
            args,
            client_msp: "Hospital1MSP",
            client_subject: "CN=doctor1,OU=client,O=Hospital1MSP",
            client_role: Some("doctor"),
            client_address: "127.0.0.1:5555".parse().ok(),
            outcome,
        }
    }

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn strict(event: &Value) {
        let config = fhirbolt::serde::DeserializationConfig {
            mode: fhirbolt::serde::DeserializationMode::Strict,
        };
        let parsed: Result<fhirbolt::model::r4::Resource, _> =
            fhirbolt::json::from_str(&event.to_string(), Some(config));
        assert!(parsed.is_ok(), "not FHIR R4: {parsed:?}: {event}");
    }

    fn entity_values(e: &Value) -> Vec<String> {
        e["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["what"]["identifier"]["value"].as_str())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_record_read_is_a_balp_patient_read_without_the_content() {
        let a = args(&["ReadRecord", "R-1", "ticket"]);
        let payload = br#"{"record":{"id":"R-1","patientId":"P-0042","version":1},"version":1,"content":"{\"secret\":\"HbA1c 7.9\"}","salt":"00"}"#;
        let r = AuditRecord::of(
            &call(&a, AuditOutcome::Success { payload }),
            1_700_000_000_123,
        );
        assert_eq!(r.record_id.as_deref(), Some("R-1"));
        assert_eq!(r.patient_id.as_deref(), Some("P-0042"));
        let e = audit_event(&r, &source(), 7);
        strict(&e);
        assert_eq!(e["action"], "R");
        assert_eq!(e["outcome"], "0");
        assert_eq!(e["subtype"][0]["code"], "read");
        assert_eq!(e["type"]["code"], "rest");
        assert_eq!(e["recorded"], "2023-11-14T22:13:20.123Z");
        assert!(
            e["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("IHE.BasicAudit.PatientRead"))
        );
        assert_eq!(e["agent"][0]["requestor"], true);
        assert_eq!(e["agent"][0]["type"]["coding"][0]["code"], "IRCP");
        assert_eq!(
            e["agent"][0]["who"]["identifier"]["value"],
            "CN=doctor1,OU=client,O=Hospital1MSP"
        );
        assert_eq!(
            e["agent"][0]["who"]["identifier"]["system"],
            "urn:medledger:msp:Hospital1MSP"
        );
        assert_eq!(
            e["source"]["observer"]["identifier"]["value"],
            "CN=peer0.hospital1"
        );
        assert_eq!(entity_values(&e), ["P-0042", "R-1", "tx1"]);
        assert!(
            !e.to_string().contains("HbA1c"),
            "content never goes in: {e}"
        );
        assert_eq!(
            e["meta"]["source"],
            "urn:medledger:peer:peer0.hospital1:audit:7"
        );
    }

    #[test]
    fn create_update_query_and_their_outcomes() {
        let a = args(&[
            "CreateRecord",
            r#"{"id":"R-9","patientId":"P-1","resourceType":"Observation"}"#,
        ]);
        let e = audit_event(
            &AuditRecord::of(&call(&a, AuditOutcome::Success { payload: b"{}" }), 0),
            &source(),
            1,
        );
        strict(&e);
        assert_eq!(
            (e["action"].clone(), e["subtype"][0]["code"].clone()),
            ("C".into(), "create".into())
        );
        assert_eq!(e["agent"][0]["type"]["coding"][0]["code"], "AUT");
        assert_eq!(entity_values(&e), ["P-1", "R-9", "tx1"]);

        let a = args(&["AmendRecord", "R-9", "typo"]);
        let e = audit_event(
            &AuditRecord::of(
                &call(
                    &a,
                    AuditOutcome::Failed {
                        status: 500,
                        message: "forbidden: not the custodian",
                    },
                ),
                0,
            ),
            &source(),
            2,
        );
        strict(&e);
        assert_eq!(
            (e["action"].clone(), e["outcome"].clone()),
            ("U".into(), "4".into())
        );
        assert!(
            e["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.contains("500: forbidden"))
        );

        let a = args(&["ListRecordsByPatient", "P-1", "20", ""]);
        let e = audit_event(
            &AuditRecord::of(
                &call(
                    &a,
                    AuditOutcome::Refused {
                        reason: "access denied",
                    },
                ),
                0,
            ),
            &source(),
            3,
        );
        strict(&e);
        assert_eq!(
            (e["action"].clone(), e["outcome"].clone()),
            ("E".into(), "8".into())
        );
        assert_eq!(e["subtype"][0]["code"], "search-type");
        let query = e["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["role"]["code"] == "24")
            .cloned()
            .unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(query["query"].as_str().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(decoded, br#"["ListRecordsByPatient","P-1","20",""]"#);
        assert!(
            e["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("IHE.BasicAudit.PatientQuery"))
        );
    }

    #[test]
    fn purpose_unknown_functions_and_oversized_input() {
        let a = args(&["RequestAccess", "R-1", "TREAT"]);
        let e = audit_event(
            &AuditRecord::of(&call(&a, AuditOutcome::Success { payload: b"{}" }), 0),
            &source(),
            4,
        );
        strict(&e);
        assert_eq!(e["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");

        let long = "x".repeat(100_000);
        let a = args(&["Put", &long]);
        let r = AuditRecord::of(&call(&a, AuditOutcome::Success { payload: b"" }), 0);
        assert!(r.function.len() <= MAX_FIELD_CHARS);
        let e = audit_event(&r, &source(), 5);
        strict(&e);
        assert_eq!(
            (e["action"].clone(), e["subtype"][0]["code"].clone()),
            ("E".into(), "operation".into())
        );
        assert!(e["meta"]["profile"].is_null());

        let gap = gap_event(&source(), 6, 3, 1_000, 2_000, 10);
        strict(&gap);
        assert!(
            gap["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.starts_with("3 audited"))
        );
    }
}
