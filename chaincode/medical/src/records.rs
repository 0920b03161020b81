//! Electronic medical records: a record's public entry (pseudonymous patient id, FHIR resource
//! type, custodian organisation, SHA-256 of the content, version, author) on the ledger; the FHIR
//! content itself in the custodian's implicit private collection, given through the transient map
//! (`content`). Every version stays in the key's history, every read of the content is logged
//! on the ledger with who, when and why, and the custodian's peer must endorse every change of
//! the entry (key-level endorsement).

use serde::{Deserialize, Serialize};

use crate::ContractError;
use crate::certificates::check_id;
use crate::ctx::{Caller, Ctx};

/// FHIR resource types a record may hold.
pub const RESOURCE_TYPES: [&str; 14] = [
    "AllergyIntolerance",
    "CarePlan",
    "Condition",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "FamilyMemberHistory",
    "Immunization",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "ServiceRequest",
    "Specimen",
];

/// Largest record content (bytes of FHIR JSON).
pub const MAX_CONTENT: usize = 1024 * 1024;

/// Most records per page of `ListRecordsByPatient`.
pub const MAX_PAGE: i32 = 100;

/// The body of `CreateRecord`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub id: String,
    pub patient_id: String,
    pub resource_type: String,
}

/// A record's public entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordEntry {
    pub id: String,
    pub patient_id: String,
    pub resource_type: String,
    /// MSP id of the organisation that holds the content.
    pub custodian: String,
    /// The current version's commitment: lowercase hex SHA-256 of its salt and content.
    pub content_hash: String,
    pub version: u32,
    pub author_msp: String,
    pub author_subject: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub tx_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amend_reason: Option<String>,
}

/// One logged read of record content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    pub record_id: String,
    pub version: u32,
    pub reader_msp: String,
    pub reader_subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_role: Option<String>,
    pub at: i64,
    pub purpose: String,
    pub tx_id: String,
    /// `custodian` (read at the custodian) or `share` (read from a shared copy).
    pub via: String,
}

/// What `ReadRecord` returns. `content` is the FHIR resource exactly as it was recorded (the
/// same bytes, as a JSON string), `salt` the version's salt (hex): anyone holding both checks
/// `sha256(salt ‖ content) == contentHash` on the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordContent {
    pub record: RecordEntry,
    pub version: u32,
    pub content: String,
    pub salt: String,
}

/// A version's content as the private collection keeps it: the exact bytes recorded with the
/// salt of their commitment. Stored as this JSON, so the private value's hash in the block is
/// as unguessable as the salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedContent {
    /// 32 random bytes, hex, chosen by the client for this version.
    pub salt: String,
    /// The FHIR resource, byte for byte as recorded.
    pub content: String,
}

/// Bytes of salt per version.
pub const SALT_BYTES: usize = 32;

/// The public commitment to a version's content: lowercase hex SHA-256 of `salt ‖ content`.
pub fn commitment(salt: &[u8], content: &[u8]) -> String {
    hex::encode(medledger_common::crypto::sha256_concat(&[salt, content]))
}

impl SealedContent {
    /// The commitment this content and salt make (`None` if the salt is not 32 hex bytes).
    pub fn commitment(&self) -> Option<String> {
        let salt = hex::decode(&self.salt)
            .ok()
            .filter(|s| s.len() == SALT_BYTES)?;
        Some(commitment(&salt, self.content.as_bytes()))
    }
}

/// A page of `ListRecordsByPatient`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPage {
    pub records: Vec<RecordEntry>,
    /// Where the next page starts; empty on the last page.
    pub bookmark: String,
}

/// One version in a record's provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionEntry {
    pub version: u32,
    pub tx_id: String,
    /// The block that committed this version.
    pub block: u64,
    pub timestamp: i64,
    pub author_msp: String,
    pub author_subject: String,
    pub content_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amend_reason: Option<String>,
}

/// What `GetRecordProvenance` returns: every version, oldest first, every read, every share of
/// the record and every change of the consents it was shared under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub record_id: String,
    pub versions: Vec<VersionEntry>,
    pub reads: Vec<AccessEntry>,
    #[serde(default)]
    pub shares: Vec<crate::sharing::ShareEvent>,
    #[serde(default)]
    pub consents: Vec<crate::sharing::ConsentEvent>,
}

pub(crate) fn record_key(id: &str) -> String {
    format!("record/{id}")
}

fn patient_prefix(patient: &str) -> String {
    format!("\u{0}patient~record\u{0}{patient}\u{0}")
}

pub fn content_key(id: &str, version: u32) -> String {
    format!("record/{id}/v{version}")
}

fn access_prefix(id: &str) -> String {
    format!("\u{0}access\u{0}{id}\u{0}")
}

/// The custodian's implicit private collection.
pub fn custodian_collection(msp: &str) -> String {
    format!("_implicit_org_{msp}")
}

pub(crate) fn is_staff(c: &Caller) -> bool {
    matches!(c.role.as_deref(), Some("doctor" | "nurse"))
}

fn is_doctor(c: &Caller) -> bool {
    c.role.as_deref() == Some("doctor")
}

#[cfg(test)]
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(medledger_common::crypto::sha256(bytes))
}

pub(crate) fn check_text(what: &str, text: &str, max: usize) -> Result<(), ContractError> {
    if text.trim().is_empty() || text.len() > max {
        return Err(ContractError::Invalid(format!(
            "{what} must be 1-{max} characters"
        )));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, ContractError> {
    serde_json::from_str(json).map_err(|e| ContractError::Invalid(format!("{what}: {e}")))
}

pub(crate) fn ledger(e: String) -> ContractError {
    ContractError::Ledger(e)
}

/// The version to record from the transient map: `content` (a FHIR resource whose
/// `resourceType` is `expected`) and `salt` (32 fresh random bytes, 64 hex characters). The
/// salt is the client's: endorsing peers must agree, so the chaincode cannot draw it.
fn sealed_from_transient<C: Ctx>(ctx: &C, expected: &str) -> Result<SealedContent, ContractError> {
    let content = content_from_transient(ctx, expected)?;
    // The 32 bytes themselves, or their 64 hex characters.
    let salt = ctx
        .transient("salt")
        .and_then(|s| match s.len() {
            SALT_BYTES => Some(s),
            n if n == 2 * SALT_BYTES => hex::decode(&s).ok(),
            _ => None,
        })
        .ok_or_else(|| {
            ContractError::Invalid(format!(
                "the transient map needs \"salt\": {SALT_BYTES} fresh random bytes (or their {} \
                 hex characters); the content's commitment on the ledger is SHA-256(salt || content)",
                SALT_BYTES * 2
            ))
        })?;
    let content = String::from_utf8(content)
        .map_err(|_| ContractError::Invalid("content must be UTF-8 JSON".into()))?;
    Ok(SealedContent {
        salt: hex::encode(salt),
        content,
    })
}

/// The FHIR content from the transient map: a JSON object whose `resourceType` is `expected`.
fn content_from_transient<C: Ctx>(ctx: &C, expected: &str) -> Result<Vec<u8>, ContractError> {
    let bytes = ctx.transient("content").ok_or_else(|| {
        ContractError::Invalid(
            "the record's FHIR content goes in the transient map under \"content\"".into(),
        )
    })?;
    if bytes.is_empty() || bytes.len() > MAX_CONTENT {
        return Err(ContractError::Invalid(format!(
            "content must be 1-{MAX_CONTENT} bytes"
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ContractError::Invalid(format!("content is not valid JSON: {e}")))?;
    let found = v
        .as_object()
        .ok_or_else(|| {
            ContractError::Invalid("content must be a FHIR resource (a JSON object)".into())
        })?
        .get("resourceType")
        .and_then(serde_json::Value::as_str);
    if found != Some(expected) {
        return Err(ContractError::Invalid(format!(
            "content resourceType {found:?} does not match the record's {expected:?}"
        )));
    }
    Ok(bytes)
}

/// A record's public entry.
pub async fn load<C: Ctx>(ctx: &mut C, id: &str) -> Result<RecordEntry, ContractError> {
    check_id("record id", id)?;
    let bytes = ctx
        .get(&record_key(id))
        .await
        .map_err(ledger)?
        .ok_or_else(|| ContractError::NotFound(format!("record {id}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ledger(format!("stored record {id}: {e}")))
}

async fn store<C: Ctx>(ctx: &mut C, r: &RecordEntry) -> Result<(), ContractError> {
    let bytes = serde_json::to_vec(r).map_err(|e| ledger(e.to_string()))?;
    ctx.put(&record_key(&r.id), bytes).await.map_err(ledger)
}

/// `CreateRecord(json)` + transient `content`: a doctor creates a record; their organisation
/// becomes its custodian.
pub async fn create<C: Ctx>(ctx: &mut C, json: &str) -> Result<RecordEntry, ContractError> {
    let caller = ctx.caller();
    if !is_doctor(&caller) {
        return Err(ContractError::Forbidden(
            "only a doctor (role=doctor) may create records".into(),
        ));
    }
    let req: CreateRequest = parse("record", json)?;
    check_id("record id", &req.id)?;
    check_id("patient id", &req.patient_id)?;
    if !RESOURCE_TYPES.contains(&req.resource_type.as_str()) {
        return Err(ContractError::Invalid(format!(
            "resourceType {:?} is not one of {}",
            req.resource_type,
            RESOURCE_TYPES.join(", ")
        )));
    }
    if ctx
        .get(&record_key(&req.id))
        .await
        .map_err(ledger)?
        .is_some()
    {
        return Err(ContractError::Conflict(format!(
            "record {} already exists",
            req.id
        )));
    }
    let sealed = sealed_from_transient(ctx, &req.resource_type)?;
    let content_hash = sealed
        .commitment()
        .ok_or_else(|| ContractError::Invalid("bad salt".into()))?;
    let content = serde_json::to_vec(&sealed).map_err(|e| ledger(e.to_string()))?;
    let now = ctx.now();
    let entry = RecordEntry {
        id: req.id.clone(),
        patient_id: req.patient_id.clone(),
        resource_type: req.resource_type,
        custodian: caller.mspid.clone(),
        content_hash,
        version: 1,
        author_msp: caller.mspid.clone(),
        author_subject: caller.subject.clone(),
        created_at: now,
        updated_at: now,
        tx_id: ctx.tx_id(),
        amend_reason: None,
    };
    store(ctx, &entry).await?;
    ctx.put(
        &format!("{}{}\u{0}", patient_prefix(&req.patient_id), req.id),
        req.id.clone().into_bytes(),
    )
    .await
    .map_err(ledger)?;
    ctx.put_private(
        &custodian_collection(&caller.mspid),
        &content_key(&req.id, 1),
        content,
    )
    .await
    .map_err(ledger)?;
    // From now on the custodian's peer must endorse every change of the entry.
    ctx.set_key_policy(
        &record_key(&req.id),
        &format!("OR('{}.peer')", caller.mspid),
    )
    .await
    .map_err(ledger)?;
    ctx.event("RecordCreated", req.id.into_bytes());
    Ok(entry)
}

/// `AmendRecord(id, reason)` + transient `content`: a doctor of the custodian adds a version.
pub async fn amend<C: Ctx>(
    ctx: &mut C,
    id: &str,
    reason: &str,
) -> Result<RecordEntry, ContractError> {
    let caller = ctx.caller();
    let mut entry = load(ctx, id).await?;
    if !is_doctor(&caller) || caller.mspid != entry.custodian {
        return Err(ContractError::Forbidden(format!(
            "only a doctor of the custodian {} may amend record {id}",
            entry.custodian
        )));
    }
    check_text("reason", reason, 512)?;
    let sealed = sealed_from_transient(ctx, &entry.resource_type)?;
    entry.content_hash = sealed
        .commitment()
        .ok_or_else(|| ContractError::Invalid("bad salt".into()))?;
    let content = serde_json::to_vec(&sealed).map_err(|e| ledger(e.to_string()))?;
    entry.version += 1;
    entry.author_msp = caller.mspid.clone();
    entry.author_subject = caller.subject.clone();
    entry.updated_at = ctx.now();
    entry.tx_id = ctx.tx_id();
    entry.amend_reason = Some(reason.to_owned());
    store(ctx, &entry).await?;
    ctx.put_private(
        &custodian_collection(&entry.custodian),
        &content_key(id, entry.version),
        content,
    )
    .await
    .map_err(ledger)?;
    ctx.event("RecordAmended", id.as_bytes().to_vec());
    Ok(entry)
}

fn may_see(caller: &Caller, patient_id: &str) -> bool {
    is_staff(caller) || caller.patient_id.as_deref() == Some(patient_id)
}

/// `GetRecord(id)`: the public entry, for staff (doctor, nurse) and the patient.
pub async fn get<C: Ctx>(ctx: &mut C, id: &str) -> Result<RecordEntry, ContractError> {
    let entry = load(ctx, id).await?;
    if !may_see(&ctx.caller(), &entry.patient_id) {
        return Err(ContractError::Forbidden(
            "only doctors, nurses and the patient may see a record".into(),
        ));
    }
    Ok(entry)
}

/// How long (seconds) a committed `RequestAccess` lets its reader read the content.
pub const TICKET_TTL: i64 = 300;

/// Writes the access-log entry and event of one granted access to record content.
async fn log_access<C: Ctx>(
    ctx: &mut C,
    record: &RecordEntry,
    version: u32,
    purpose: &str,
    via: &str,
) -> Result<AccessEntry, ContractError> {
    let caller = ctx.caller();
    let tx_id = ctx.tx_id();
    let entry = AccessEntry {
        record_id: record.id.clone(),
        version,
        reader_msp: caller.mspid,
        reader_subject: caller.subject,
        reader_role: caller.role,
        at: ctx.now(),
        purpose: purpose.to_owned(),
        tx_id: tx_id.clone(),
        via: via.to_owned(),
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| ledger(e.to_string()))?;
    ctx.put(&access_key(&record.id, &tx_id), bytes.clone())
        .await
        .map_err(ledger)?;
    ctx.event("RecordAccess", bytes);
    Ok(entry)
}

fn access_key(id: &str, tx_id: &str) -> String {
    format!("{}{tx_id}\u{0}", access_prefix(id))
}

/// Staff of the custodian, and the patient when enrolled at the custodian, read directly.
fn check_custodian_reader(caller: &Caller, record: &RecordEntry) -> Result<(), ContractError> {
    if caller.mspid == record.custodian && may_see(caller, &record.patient_id) {
        return Ok(());
    }
    Err(ContractError::Forbidden(format!(
        "only doctors and nurses of the custodian {} and the patient may read record {}; other organisations read shared copies (ReadSharedRecord)",
        record.custodian, record.id
    )))
}

/// `RequestAccess(id, purpose)`, submitted: checks the caller may read the record's content
/// (directly at the custodian, or a shared copy under a valid consent), logs the access on the
/// ledger and emits `RecordAccess`. Its transaction id is the ticket `ReadRecord` and
/// `ReadSharedRecord` take, so content is read only after its access is on the ledger, and the
/// content itself is never returned by a submitted transaction (it would be in the block).
pub async fn request_access<C: Ctx>(
    ctx: &mut C,
    id: &str,
    purpose: &str,
) -> Result<AccessEntry, ContractError> {
    let caller = ctx.caller();
    let record = load(ctx, id).await?;
    check_text("purpose", purpose, 256)?;
    if caller.mspid == record.custodian {
        check_custodian_reader(&caller, &record)?;
        log_access(ctx, &record, record.version, purpose, "custodian").await
    } else {
        let share = crate::sharing::check_share_reader(ctx, &record, &caller).await?;
        log_access(ctx, &record, share.version, purpose, "share").await
    }
}

/// The caller's committed, unexpired access ticket for `record`.
pub(crate) async fn check_ticket<C: Ctx>(
    ctx: &mut C,
    record: &RecordEntry,
    ticket: &str,
    via: &str,
) -> Result<AccessEntry, ContractError> {
    check_id("ticket", ticket)?;
    let caller = ctx.caller();
    let bytes = ctx
        .get(&access_key(&record.id, ticket))
        .await
        .map_err(ledger)?
        .ok_or_else(|| {
            ContractError::Forbidden(format!(
                "no access ticket {ticket} for record {}: submit RequestAccess first",
                record.id
            ))
        })?;
    let entry: AccessEntry =
        serde_json::from_slice(&bytes).map_err(|e| ledger(format!("stored access: {e}")))?;
    if entry.reader_msp != caller.mspid || entry.reader_subject != caller.subject {
        return Err(ContractError::Forbidden(
            "the access ticket belongs to another reader".into(),
        ));
    }
    if entry.via != via {
        return Err(ContractError::Forbidden(format!(
            "the access ticket was granted for a {} read",
            entry.via
        )));
    }
    if ctx.now() - entry.at > TICKET_TTL {
        return Err(ContractError::Forbidden(
            "the access ticket has expired: request access again".into(),
        ));
    }
    Ok(entry)
}

/// `ReadRecord(id, ticket[, version])`, evaluated: the content for a reader at the custodian
/// holding a ticket from `RequestAccess`.
pub async fn read<C: Ctx>(
    ctx: &mut C,
    id: &str,
    ticket: &str,
    version: Option<&str>,
) -> Result<RecordContent, ContractError> {
    let caller = ctx.caller();
    let record = load(ctx, id).await?;
    check_custodian_reader(&caller, &record)?;
    let version = match version {
        None | Some("") => record.version,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=record.version).contains(v))
            .ok_or_else(|| {
                ContractError::Invalid(format!(
                    "version must be 1-{} for record {id}",
                    record.version
                ))
            })?,
    };
    check_ticket(ctx, &record, ticket, "custodian").await?;
    // Only the current version's hash is in the entry; older ones are in its history.
    let expected = (version == record.version).then_some(record.content_hash.as_str());
    let bytes = private_content(
        ctx,
        &custodian_collection(&record.custodian),
        &content_key(id, version),
        expected,
        &format!("content of record {id} version {version}"),
    )
    .await?;
    let sealed = parse_content(&bytes)?;
    Ok(RecordContent {
        content: sealed.content,
        salt: sealed.salt,
        record,
        version,
    })
}

/// Record content from a private collection, checked against `expected_hash` when given.
pub(crate) async fn private_content<C: Ctx>(
    ctx: &mut C,
    collection: &str,
    key: &str,
    expected_hash: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, ContractError> {
    let bytes = ctx
        .get_private(collection, key)
        .await
        .map_err(ledger)?
        .ok_or_else(|| ContractError::NotFound(what.to_owned()))?;
    if let Some(h) = expected_hash
        && parse_content(&bytes)?.commitment().as_deref() != Some(h)
    {
        return Err(ledger(format!(
            "{what} does not match its commitment on the ledger"
        )));
    }
    Ok(bytes)
}

/// Stored content with its salt (it was checked to be a FHIR resource when written).
pub(crate) fn parse_content(bytes: &[u8]) -> Result<SealedContent, ContractError> {
    serde_json::from_slice(bytes).map_err(|e| ledger(format!("stored content: {e}")))
}

/// `ListRecordsByPatient(patientId, pageSize, bookmark)`: the patient's record entries.
pub async fn list_by_patient<C: Ctx>(
    ctx: &mut C,
    patient_id: &str,
    page_size: &str,
    bookmark: &str,
) -> Result<RecordPage, ContractError> {
    check_id("patient id", patient_id)?;
    if !may_see(&ctx.caller(), patient_id) {
        return Err(ContractError::Forbidden(
            "only doctors, nurses and the patient may list a patient's records".into(),
        ));
    }
    let size: i32 = page_size
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| ContractError::Invalid(format!("pageSize must be 1-{MAX_PAGE}")))?;
    let prefix = patient_prefix(patient_id);
    if !bookmark.is_empty() && !bookmark.starts_with(&prefix) {
        return Err(ContractError::Invalid(
            "bookmark is not from this listing".into(),
        ));
    }
    let (rows, next) = ctx.page(&prefix, size, bookmark).await.map_err(ledger)?;
    let mut records = Vec::with_capacity(rows.len());
    for (_, id) in rows {
        let id = String::from_utf8(id).map_err(|_| ledger("index entry is not UTF-8".into()))?;
        records.push(load(ctx, &id).await?);
    }
    Ok(RecordPage {
        records,
        bookmark: next,
    })
}

/// `GetRecordProvenance(id)`: every version (transaction, time, author) and every logged read.
pub async fn provenance<C: Ctx>(ctx: &mut C, id: &str) -> Result<Provenance, ContractError> {
    let record = get(ctx, id).await?;
    let mut versions = Vec::new();
    for change in ctx.history(&record_key(id)).await.map_err(ledger)? {
        if change.is_delete {
            continue;
        }
        let v: RecordEntry = serde_json::from_slice(&change.value)
            .map_err(|e| ledger(format!("history of record {id}: {e}")))?;
        versions.push(VersionEntry {
            version: v.version,
            tx_id: change.tx_id,
            block: change.block,
            timestamp: change.timestamp,
            author_msp: v.author_msp,
            author_subject: v.author_subject,
            content_hash: v.content_hash,
            amend_reason: v.amend_reason,
        });
    }
    versions.sort_by_key(|v| v.version);
    let mut reads = Vec::new();
    for (_, bytes) in ctx.scan(&access_prefix(id)).await.map_err(ledger)? {
        reads.push(
            serde_json::from_slice::<AccessEntry>(&bytes)
                .map_err(|e| ledger(format!("access log of record {id}: {e}")))?,
        );
    }
    reads.sort_by(|a, b| a.at.cmp(&b.at).then(a.tx_id.cmp(&b.tx_id)));
    let (shares, consents) = crate::sharing::trail(ctx, &record).await?;
    Ok(Provenance {
        record_id: record.id,
        versions,
        reads,
        shares,
        consents,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ctx::{Caller, MemoryCtx, MemoryLedger};
    use crate::invoke;

    pub const NOW: i64 = 1_800_000_000;

    pub fn doctor(msp: &str) -> Caller {
        Caller::test(msp, "doctor1", Some("doctor"), "client", None)
    }
    pub fn nurse(msp: &str) -> Caller {
        Caller::test(msp, "nurse1", Some("nurse"), "client", None)
    }
    pub fn patient(msp: &str, id: &str) -> Caller {
        Caller::test(msp, "patient1", Some("patient"), "client", Some(id))
    }

    pub fn ledger() -> MemoryLedger {
        MemoryLedger {
            member_of: vec![
                "_implicit_org_Hospital1MSP".into(),
                "shared_Hospital1MSP_Hospital2MSP".into(),
            ],
            ..Default::default()
        }
    }

    pub const OBSERVATION: &str = r#"{"resourceType":"Observation","status":"final","code":{"text":"blood pressure"},"valueString":"150/95"}"#;

    /// Runs one call as `caller` with an optional transient `content`; commits when it succeeds.
    pub async fn call(
        l: &mut MemoryLedger,
        caller: Caller,
        tx: &str,
        f: &str,
        args: &[&str],
        content: Option<&str>,
    ) -> Result<serde_json::Value, ContractError> {
        let mut ctx = MemoryCtx::new(l, caller, tx, NOW);
        if let Some(c) = content {
            ctx = ctx
                .with_transient("content", c.as_bytes())
                .with_transient("salt", test_salt(tx).as_bytes());
        }
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = invoke(&mut ctx, f, &args).await?;
        ctx.commit();
        Ok(serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null))
    }

    /// The salt the test client sends with transaction `tx` (hex).
    pub fn test_salt(tx: &str) -> String {
        sha256_hex(format!("salt of {tx}").as_bytes())
    }

    /// The FHIR content a read returned, parsed.
    pub fn content_of(read: &serde_json::Value) -> serde_json::Value {
        serde_json::from_str(read["content"].as_str().expect("content is a string"))
            .expect("content is JSON")
    }

    /// RequestAccess (committed), then the evaluated read `f` with its ticket.
    pub async fn read_as(
        l: &mut MemoryLedger,
        caller: Caller,
        tx: &str,
        f: &str,
        args: &[&str],
    ) -> Result<serde_json::Value, ContractError> {
        call(l, caller.clone(), tx, "RequestAccess", &args[..2], None).await?;
        let mut read_args = vec![args[0], tx];
        read_args.extend_from_slice(&args[2..]);
        call(l, caller, "eval", f, &read_args, None).await
    }

    pub async fn create(
        l: &mut MemoryLedger,
        id: &str,
    ) -> Result<serde_json::Value, ContractError> {
        let body = format!(r#"{{"id":"{id}","patientId":"P-0042","resourceType":"Observation"}}"#);
        call(
            l,
            doctor("Hospital1MSP"),
            &format!("tx-{id}"),
            "CreateRecord",
            &[&body],
            Some(OBSERVATION),
        )
        .await
    }

    #[tokio::test]
    async fn a_doctor_creates_amends_and_the_history_keeps_every_version() {
        let mut l = ledger();
        let r = create(&mut l, "R-1").await.unwrap();
        assert_eq!(r["custodian"], "Hospital1MSP");
        assert_eq!(r["version"], 1);
        let salt = hex::decode(test_salt("tx-R-1")).unwrap();
        assert_eq!(r["contentHash"], commitment(&salt, OBSERVATION.as_bytes()));
        // Content is private, the entry public, the custodian's peer must endorse changes.
        assert!(
            !l.state
                .values()
                .any(|v| String::from_utf8_lossy(v).contains("150/95"))
        );
        let stored: SealedContent = serde_json::from_slice(
            &l.private[&(
                "_implicit_org_Hospital1MSP".to_owned(),
                "record/R-1/v1".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(stored.content, OBSERVATION);
        assert_eq!(l.key_policies["record/R-1"], "OR('Hospital1MSP.peer')");

        let v2 = r#"{"resourceType":"Observation","status":"amended","valueString":"140/90"}"#;
        let a = call(
            &mut l,
            doctor("Hospital1MSP"),
            "tx-a",
            "AmendRecord",
            &["R-1", "re-measured"],
            Some(v2),
        )
        .await
        .unwrap();
        assert_eq!(a["version"], 2);
        let current = read_as(
            &mut l,
            nurse("Hospital1MSP"),
            "tx-r1",
            "ReadRecord",
            &["R-1", "treatment"],
        )
        .await
        .unwrap();
        assert_eq!(content_of(&current)["valueString"], "140/90");
        let old = read_as(
            &mut l,
            nurse("Hospital1MSP"),
            "tx-r2",
            "ReadRecord",
            &["R-1", "audit", "1"],
        )
        .await
        .unwrap();
        // The ticket is personal, must be on the ledger, and expires.
        let e = call(
            &mut l,
            doctor("Hospital1MSP"),
            "e",
            "ReadRecord",
            &["R-1", "tx-r2"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("another reader"), "{e}");
        let e = call(
            &mut l,
            nurse("Hospital1MSP"),
            "e",
            "ReadRecord",
            &["R-1", "tx-none"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("submit RequestAccess first"), "{e}");
        let mut later = MemoryCtx::new(&mut l, nurse("Hospital1MSP"), "e", NOW + TICKET_TTL + 1);
        let e = read(&mut later, "R-1", "tx-r2", None).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        drop(later);
        assert_eq!(content_of(&old)["valueString"], "150/95");
        let p = call(
            &mut l,
            patient("Hospital1MSP", "P-0042"),
            "tx-p",
            "GetRecordProvenance",
            &["R-1"],
            None,
        )
        .await
        .unwrap();
        let versions = p["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0]["txId"], "tx-R-1");
        assert_eq!(versions[1]["amendReason"], "re-measured");
        assert!(
            versions[1]["authorSubject"]
                .as_str()
                .unwrap()
                .contains("doctor1")
        );
        let reads = p["reads"].as_array().unwrap();
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0]["purpose"], "treatment");
        assert_eq!(reads[0]["readerRole"], "nurse");
    }

    #[tokio::test]
    async fn access_rules_by_role_and_organisation() {
        let mut l = ledger();
        let body = r#"{"id":"R-1","patientId":"P-0042","resourceType":"Observation"}"#;
        for who in [nurse("Hospital1MSP"), patient("Hospital1MSP", "P-0042")] {
            let e = call(&mut l, who, "t", "CreateRecord", &[body], Some(OBSERVATION))
                .await
                .unwrap_err();
            assert!(matches!(e, ContractError::Forbidden(_)), "{e}");
        }
        create(&mut l, "R-1").await.unwrap();
        // Another hospital's doctor may not amend, nor read the content directly.
        let e = call(
            &mut l,
            doctor("Hospital2MSP"),
            "t",
            "AmendRecord",
            &["R-1", "x"],
            Some(OBSERVATION),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ContractError::Forbidden(_)), "{e}");
        let e = call(
            &mut l,
            doctor("Hospital2MSP"),
            "t",
            "ReadRecord",
            &["R-1", "t"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("ReadSharedRecord"), "{e}");
        let e = call(
            &mut l,
            doctor("Hospital2MSP"),
            "t",
            "RequestAccess",
            &["R-1", "curious"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("has not been shared"), "{e}");
        // Another patient sees nothing; the patient reads their own record.
        let e = call(
            &mut l,
            patient("Hospital1MSP", "P-9999"),
            "t",
            "GetRecord",
            &["R-1"],
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ContractError::Forbidden(_)), "{e}");
        let mine = read_as(
            &mut l,
            patient("Hospital1MSP", "P-0042"),
            "t2",
            "ReadRecord",
            &["R-1", "my copy"],
        )
        .await
        .unwrap();
        assert_eq!(mine["record"]["id"], "R-1");
        // A peer outside the custodian's collection cannot serve the content.
        l.member_of.clear();
        let e = read_as(
            &mut l,
            doctor("Hospital1MSP"),
            "t3",
            "ReadRecord",
            &["R-1", "x"],
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not a member"), "{e}");
    }

    #[tokio::test]
    async fn records_are_listed_by_patient_in_pages() {
        let mut l = ledger();
        for i in 0..5 {
            create(&mut l, &format!("R-{i}")).await.unwrap();
        }
        let other = r#"{"id":"X-1","patientId":"P-0001","resourceType":"Observation"}"#;
        call(
            &mut l,
            doctor("Hospital1MSP"),
            "tx",
            "CreateRecord",
            &[other],
            Some(OBSERVATION),
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        let mut bookmark = String::new();
        loop {
            let page = call(
                &mut l,
                doctor("Hospital2MSP"),
                "t",
                "ListRecordsByPatient",
                &["P-0042", "2", &bookmark],
                None,
            )
            .await
            .unwrap();
            let recs = page["records"].as_array().unwrap();
            assert!(recs.len() <= 2);
            ids.extend(recs.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
            bookmark = page["bookmark"].as_str().unwrap().to_owned();
            if bookmark.is_empty() {
                break;
            }
        }
        assert_eq!(ids, vec!["R-0", "R-1", "R-2", "R-3", "R-4"]);
        for size in ["0", "101", "x"] {
            let e = call(
                &mut l,
                doctor("Hospital1MSP"),
                "t",
                "ListRecordsByPatient",
                &["P-0042", size, ""],
                None,
            )
            .await
            .unwrap_err();
            assert!(matches!(e, ContractError::Invalid(_)), "{size}: {e}");
        }
    }

    #[tokio::test]
    async fn bad_records_are_refused_with_the_reason() {
        let mut l = ledger();
        let cases: [(&str, Option<&str>, &str); 8] = [
            ("not json", Some(OBSERVATION), "invalid argument: record"),
            (
                r#"{"id":"R 1","patientId":"P","resourceType":"Observation"}"#,
                Some(OBSERVATION),
                "record id",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Pizza"}"#,
                Some(OBSERVATION),
                "not one of",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Observation","x":1}"#,
                Some(OBSERVATION),
                "unknown field",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Observation"}"#,
                None,
                "transient map",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Observation"}"#,
                Some("{not json"),
                "not valid JSON",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Observation"}"#,
                Some("[1,2]"),
                "JSON object",
            ),
            (
                r#"{"id":"R-1","patientId":"P","resourceType":"Observation"}"#,
                Some(r#"{"resourceType":"Condition"}"#),
                "does not match",
            ),
        ];
        for (body, content, want) in cases {
            let e = call(
                &mut l,
                doctor("Hospital1MSP"),
                "t",
                "CreateRecord",
                &[body],
                content,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert!(l.state.is_empty() && l.private.is_empty(), "nothing stored");
        create(&mut l, "R-1").await.unwrap();
        let e = create(&mut l, "R-1").await.unwrap_err();
        assert!(matches!(e, ContractError::Conflict(_)));
        let big = format!(
            r#"{{"resourceType":"Observation","x":"{}"}}"#,
            "a".repeat(MAX_CONTENT)
        );
        let body = r#"{"id":"R-2","patientId":"P","resourceType":"Observation"}"#;
        let e = call(
            &mut l,
            doctor("Hospital1MSP"),
            "t",
            "CreateRecord",
            &[body],
            Some(&big),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        for (f, args) in [
            ("RequestAccess", vec!["R-1", ""]),
            ("ReadRecord", vec!["R-1", "x", "7"]),
            ("ReadRecord", vec!["R-1", "bad ticket!"]),
            ("GetRecord", vec!["../etc"]),
            ("GetRecord", vec![]),
            ("NoSuchFunction", vec![]),
        ] {
            let e = call(&mut l, doctor("Hospital1MSP"), "t", f, &args, None)
                .await
                .unwrap_err();
            assert!(matches!(e, ContractError::Invalid(_)), "{f} {args:?}: {e}");
        }
        let e = call(
            &mut l,
            doctor("Hospital1MSP"),
            "t",
            "GetRecord",
            &["R-404"],
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ContractError::NotFound(_)), "{e}");
    }

    #[tokio::test]
    async fn a_reader_gets_the_exact_bytes_recorded_and_can_check_them_against_the_ledger() {
        let mut l = ledger();
        // Unsorted keys, odd whitespace, non-ASCII text: any re-serialisation would change them.
        let exact = "{ \"status\":\"final\",\n  \"resourceType\" : \"Observation\",\"note\":\"Blutdruck erhöht – 心拍\"  }";
        let body = r#"{"id":"R-9","patientId":"P-0042","resourceType":"Observation"}"#;
        let entry = call(
            &mut l,
            doctor("Hospital1MSP"),
            "tx-9",
            "CreateRecord",
            &[body],
            Some(exact),
        )
        .await
        .unwrap();
        let read = read_as(
            &mut l,
            nurse("Hospital1MSP"),
            "tx-r9",
            "ReadRecord",
            &["R-9", "care"],
        )
        .await
        .unwrap();
        assert_eq!(read["content"], exact);
        let salt = hex::decode(read["salt"].as_str().unwrap()).unwrap();
        assert_eq!(salt.len(), SALT_BYTES);
        assert_eq!(
            commitment(&salt, read["content"].as_str().unwrap().as_bytes()),
            entry["contentHash"].as_str().unwrap()
        );
    }

    #[tokio::test]
    async fn a_version_without_a_fresh_salt_is_refused() {
        let mut l = ledger();
        let body = r#"{"id":"R-8","patientId":"P-0042","resourceType":"Observation"}"#;
        for salt in [
            None,
            Some("00"),
            Some("zz".repeat(32).as_str()),
            Some(&"ab".repeat(33)[..]),
        ] {
            let mut ctx = MemoryCtx::new(&mut l, doctor("Hospital1MSP"), "tx-8", NOW)
                .with_transient("content", OBSERVATION.as_bytes());
            if let Some(s) = salt {
                ctx = ctx.with_transient("salt", s.as_bytes());
            }
            let e = invoke(&mut ctx, "CreateRecord", &[body.to_owned()])
                .await
                .unwrap_err();
            assert!(e.to_string().contains("salt"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_non_member_cannot_confirm_a_guess_from_anything_on_the_ledger() {
        let mut l = ledger();
        let body = r#"{"id":"R-7","patientId":"P-0042","resourceType":"Observation"}"#;
        let template = |bp: &str| {
            format!(
                r#"{{"resourceType":"Observation","status":"final","code":{{"text":"blood pressure"}},"valueString":"{bp}"}}"#
            )
        };
        let truth = template("128/82");
        call(
            &mut l,
            doctor("Hospital1MSP"),
            "tx-7",
            "CreateRecord",
            &[body],
            Some(&truth),
        )
        .await
        .unwrap();
        // Everything a non-member sees: the public state, and the hash of every private value
        // (what the block's hashed write sets carry).
        let mut visible: Vec<String> = l
            .state
            .values()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        visible.extend(l.private.values().map(|v| sha256_hex(v)));
        // A guesser who knows the exact structure tries every plausible reading, the true one
        // included, hashed as the old contract did and as JSON with an empty salt.
        let mut confirmed = 0;
        for sys in 90..200 {
            for dia in 50..120 {
                let guess = template(&format!("{sys}/{dia}"));
                let plain = sha256_hex(guess.as_bytes());
                let unsalted = sha256_hex(
                    &serde_json::to_vec(&SealedContent {
                        salt: String::new(),
                        content: guess.clone(),
                    })
                    .unwrap(),
                );
                if visible
                    .iter()
                    .any(|v| v.contains(&plain) || v.contains(&unsalted))
                {
                    confirmed += 1;
                }
            }
        }
        assert_eq!(confirmed, 0, "a guess matched something on the ledger");
        // The member, who holds the salt, confirms the true content.
        let salt = hex::decode(test_salt("tx-7")).unwrap();
        assert!(
            visible
                .iter()
                .any(|v| v.contains(&commitment(&salt, truth.as_bytes())))
        );
    }
}
