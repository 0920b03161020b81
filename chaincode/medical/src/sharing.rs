//! Health data sharing under patient consent. A patient (a client whose certificate carries
//! `patientId`) grants an organisation, optionally one role there, access to records by type or
//! id, for a purpose, until an expiry; the custodian then copies a covered record's content into
//! the private collection it shares with the grantee (`shared_<A>_<B>`, MSP ids sorted); the
//! grantee reads it only while the consent is valid, and every read is logged. Revoking a
//! consent erases the shared copies made under it (PurgePrivateData).

use serde::{Deserialize, Serialize};

use crate::ContractError;
use crate::certificates::check_id;
use crate::ctx::{Caller, Ctx};
use crate::records::{self, RecordContent, RecordEntry, check_text, custodian_collection, ledger};

/// Most record types or ids one consent may name.
const MAX_SCOPE: usize = 64;

/// What a consent covers: records of these FHIR types, or these record ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub record_types: Vec<String>,
    #[serde(default)]
    pub record_ids: Vec<String>,
}

/// The body of `GrantConsent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRequest {
    pub id: String,
    pub grantee_msp: String,
    #[serde(default)]
    pub grantee_role: Option<String>,
    pub scope: Scope,
    pub purpose: String,
    pub expires_at: i64,
}

/// A consent as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    pub id: String,
    pub patient_id: String,
    pub grantee_msp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grantee_role: Option<String>,
    pub scope: Scope,
    pub purpose: String,
    pub expires_at: i64,
    pub granted_at: i64,
    pub granted_by_msp: String,
    pub granted_by_subject: String,
    pub tx_id: String,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A record shared with an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    pub record_id: String,
    pub grantee_msp: String,
    pub consent_id: String,
    pub patient_id: String,
    pub version: u32,
    pub content_hash: String,
    pub shared_by_msp: String,
    pub shared_by_subject: String,
    pub shared_at: i64,
    pub tx_id: String,
}

/// The private collection two organisations share.
pub fn shared_collection(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("shared_{x}_{y}")
}

fn consent_prefix(patient: &str) -> String {
    format!("\u{0}consent\u{0}{patient}\u{0}")
}

fn consent_key(patient: &str, id: &str) -> String {
    format!("{}{id}\u{0}", consent_prefix(patient))
}

fn share_key(record: &str, grantee: &str) -> String {
    format!("share/{record}/{grantee}")
}

fn shares_of_consent_prefix(patient: &str, consent: &str) -> String {
    format!("\u{0}consent~share\u{0}{patient}\u{0}{consent}\u{0}")
}

pub fn shared_content_key(record: &str, grantee: &str) -> String {
    format!("shared/{record}/{grantee}")
}

fn patient_of(caller: &Caller) -> Result<String, ContractError> {
    caller.patient_id.clone().ok_or_else(|| {
        ContractError::Forbidden(
            "only a patient (certificate attribute patientId) may manage consent".into(),
        )
    })
}

async fn get_json<C: Ctx, T: serde::de::DeserializeOwned>(
    ctx: &mut C,
    key: &str,
    what: &str,
) -> Result<Option<T>, ContractError> {
    match ctx.get(key).await.map_err(ledger)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ledger(format!("stored {what}: {e}"))),
        None => Ok(None),
    }
}

async fn put_json<C: Ctx>(ctx: &mut C, key: &str, v: &impl Serialize) -> Result<(), ContractError> {
    let bytes = serde_json::to_vec(v).map_err(|e| ledger(e.to_string()))?;
    ctx.put(key, bytes).await.map_err(ledger)
}

async fn load_consent<C: Ctx>(
    ctx: &mut C,
    patient: &str,
    id: &str,
) -> Result<Consent, ContractError> {
    check_id("consent id", id)?;
    get_json(ctx, &consent_key(patient, id), "consent")
        .await?
        .ok_or_else(|| ContractError::NotFound(format!("consent {id} of patient {patient}")))
}

/// `GrantConsent(json)`: the patient grants an organisation access.
pub async fn grant<C: Ctx>(ctx: &mut C, json: &str) -> Result<Consent, ContractError> {
    let caller = ctx.caller();
    let patient = patient_of(&caller)?;
    let req: GrantRequest =
        serde_json::from_str(json).map_err(|e| ContractError::Invalid(format!("consent: {e}")))?;
    check_id("consent id", &req.id)?;
    check_id("grantee MSP id", &req.grantee_msp)?;
    if let Some(role) = &req.grantee_role {
        check_id("grantee role", role)?;
    }
    check_text("purpose", &req.purpose, 256)?;
    let (types, ids) = (&req.scope.record_types, &req.scope.record_ids);
    if types.is_empty() && ids.is_empty() || types.len() + ids.len() > MAX_SCOPE {
        return Err(ContractError::Invalid(format!(
            "scope must name 1-{MAX_SCOPE} record types or record ids"
        )));
    }
    if let Some(t) = types
        .iter()
        .find(|t| !records::RESOURCE_TYPES.contains(&t.as_str()))
    {
        return Err(ContractError::Invalid(format!(
            "scope record type {t:?} is not a known FHIR resource type"
        )));
    }
    for id in ids {
        check_id("scope record id", id)?;
    }
    let now = ctx.now();
    if req.expires_at <= now {
        return Err(ContractError::Invalid(
            "expiresAt must be in the future".into(),
        ));
    }
    let key = consent_key(&patient, &req.id);
    if ctx.get(&key).await.map_err(ledger)?.is_some() {
        return Err(ContractError::Conflict(format!(
            "consent {} already exists",
            req.id
        )));
    }
    let consent = Consent {
        id: req.id,
        patient_id: patient,
        grantee_msp: req.grantee_msp,
        grantee_role: req.grantee_role,
        scope: req.scope,
        purpose: req.purpose,
        expires_at: req.expires_at,
        granted_at: now,
        granted_by_msp: caller.mspid.clone(),
        granted_by_subject: caller.subject,
        tx_id: ctx.tx_id(),
        revoked: false,
        revoked_at: None,
    };
    put_json(ctx, &key, &consent).await?;
    // Only the patient's organisation may endorse later changes of the consent.
    ctx.set_key_policy(&key, &format!("OR('{}.peer')", caller.mspid))
        .await
        .map_err(ledger)?;
    ctx.event("ConsentGranted", consent.id.clone().into_bytes());
    Ok(consent)
}

/// `RevokeConsent(id)`: the patient revokes; the shared copies made under it are erased.
pub async fn revoke<C: Ctx>(ctx: &mut C, id: &str) -> Result<Consent, ContractError> {
    let patient = patient_of(&ctx.caller())?;
    let mut consent = load_consent(ctx, &patient, id).await?;
    if consent.revoked {
        return Err(ContractError::Conflict(format!(
            "consent {id} is already revoked"
        )));
    }
    consent.revoked = true;
    consent.revoked_at = Some(ctx.now());
    put_json(ctx, &consent_key(&patient, id), &consent).await?;
    for (_, share) in ctx
        .scan(&shares_of_consent_prefix(&patient, id))
        .await
        .map_err(ledger)?
    {
        let share: Share =
            serde_json::from_slice(&share).map_err(|e| ledger(format!("stored share: {e}")))?;
        ctx.purge_private(
            &shared_collection(&share.shared_by_msp, &share.grantee_msp),
            &shared_content_key(&share.record_id, &share.grantee_msp),
        )
        .await
        .map_err(ledger)?;
    }
    ctx.event("ConsentRevoked", id.as_bytes().to_vec());
    Ok(consent)
}

/// `ListConsents([patientId])`: a patient's own consents; staff see those granted to their
/// organisation.
pub async fn list<C: Ctx>(
    ctx: &mut C,
    patient: Option<&str>,
) -> Result<Vec<Consent>, ContractError> {
    let caller = ctx.caller();
    let (patient, only_mine) = match (&caller.patient_id, patient) {
        (Some(own), None) => (own.clone(), false),
        (Some(own), Some(p)) if own == p => (own.clone(), false),
        (_, Some(p)) if records::is_staff(&caller) => (p.to_owned(), true),
        _ => {
            return Err(ContractError::Forbidden(
                "patients list their own consents; doctors and nurses name the patient".into(),
            ));
        }
    };
    check_id("patient id", &patient)?;
    let mut out = Vec::new();
    for (_, bytes) in ctx.scan(&consent_prefix(&patient)).await.map_err(ledger)? {
        let c: Consent =
            serde_json::from_slice(&bytes).map_err(|e| ledger(format!("stored consent: {e}")))?;
        if !only_mine || c.grantee_msp == caller.mspid {
            out.push(c);
        }
    }
    Ok(out)
}

/// Whether `consent` covers `record` now (unrevoked, unexpired, its patient, in scope).
fn check_consent(consent: &Consent, record: &RecordEntry, now: i64) -> Result<(), ContractError> {
    let refuse = |why: String| Err(ContractError::Forbidden(why));
    if consent.revoked {
        return refuse(format!("consent {} has been revoked", consent.id));
    }
    if now >= consent.expires_at {
        return refuse(format!("consent {} has expired", consent.id));
    }
    if consent.patient_id != record.patient_id {
        return refuse(format!(
            "consent {} is not the consent of record {}'s patient",
            consent.id, record.id
        ));
    }
    let covered = consent.scope.record_ids.contains(&record.id)
        || consent.scope.record_types.contains(&record.resource_type);
    if !covered {
        return refuse(format!(
            "consent {} does not cover record {} ({})",
            consent.id, record.id, record.resource_type
        ));
    }
    Ok(())
}

/// One share of a record, from the history of its share entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareEvent {
    pub grantee_msp: String,
    pub consent_id: String,
    pub version: u32,
    pub shared_by_msp: String,
    pub shared_by_subject: String,
    pub tx_id: String,
    pub block: u64,
    pub timestamp: i64,
}

/// One change (grant, revocation) of a consent a record was shared under. A revocation erased
/// the shared copies made under the consent in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentEvent {
    pub consent_id: String,
    pub grantee_msp: String,
    pub revoked: bool,
    pub tx_id: String,
    pub block: u64,
    pub timestamp: i64,
}

/// The sharing trail of a record: every share (oldest first), and every change of the consents
/// those shares were made under.
pub(crate) async fn trail<C: Ctx>(
    ctx: &mut C,
    record: &RecordEntry,
) -> Result<(Vec<ShareEvent>, Vec<ConsentEvent>), ContractError> {
    let mut shares = Vec::new();
    for (key, _) in ctx
        .scan(&format!("share/{}/", record.id))
        .await
        .map_err(ledger)?
    {
        for change in ctx.history(&key).await.map_err(ledger)? {
            if change.is_delete {
                continue;
            }
            let s: Share = serde_json::from_slice(&change.value)
                .map_err(|e| ledger(format!("history of share {key}: {e}")))?;
            shares.push(ShareEvent {
                grantee_msp: s.grantee_msp,
                consent_id: s.consent_id,
                version: s.version,
                shared_by_msp: s.shared_by_msp,
                shared_by_subject: s.shared_by_subject,
                tx_id: change.tx_id,
                block: change.block,
                timestamp: change.timestamp,
            });
        }
    }
    shares.sort_by(|a, b| a.block.cmp(&b.block).then(a.tx_id.cmp(&b.tx_id)));
    let mut consent_ids: Vec<&str> = shares.iter().map(|s| s.consent_id.as_str()).collect();
    consent_ids.sort_unstable();
    consent_ids.dedup();
    let mut consents = Vec::new();
    for id in consent_ids {
        let key = consent_key(&record.patient_id, id);
        for change in ctx.history(&key).await.map_err(ledger)? {
            if change.is_delete {
                continue;
            }
            let c: Consent = serde_json::from_slice(&change.value)
                .map_err(|e| ledger(format!("history of consent {id}: {e}")))?;
            consents.push(ConsentEvent {
                consent_id: c.id,
                grantee_msp: c.grantee_msp,
                revoked: c.revoked,
                tx_id: change.tx_id,
                block: change.block,
                timestamp: change.timestamp,
            });
        }
    }
    consents.sort_by(|a, b| a.block.cmp(&b.block).then(a.tx_id.cmp(&b.tx_id)));
    Ok((shares, consents))
}

/// `ShareRecord(recordId, consentId)`: a doctor of the custodian copies the record's current
/// content into the collection shared with the consent's grantee.
pub async fn share<C: Ctx>(
    ctx: &mut C,
    record_id: &str,
    consent_id: &str,
) -> Result<Share, ContractError> {
    let caller = ctx.caller();
    let record = records::load(ctx, record_id).await?;
    if caller.role.as_deref() != Some("doctor") || caller.mspid != record.custodian {
        return Err(ContractError::Forbidden(format!(
            "only a doctor of the custodian {} may share record {record_id}",
            record.custodian
        )));
    }
    let consent = load_consent(ctx, &record.patient_id, consent_id).await?;
    check_consent(&consent, &record, ctx.now())?;
    if consent.grantee_msp == record.custodian {
        return Err(ContractError::Invalid(
            "the custodian already holds the record".into(),
        ));
    }
    let content = records::private_content(
        ctx,
        &custodian_collection(&record.custodian),
        &records::content_key(record_id, record.version),
        Some(&record.content_hash),
        &format!("content of record {record_id}"),
    )
    .await?;
    ctx.put_private(
        &shared_collection(&record.custodian, &consent.grantee_msp),
        &shared_content_key(record_id, &consent.grantee_msp),
        content,
    )
    .await
    .map_err(ledger)?;
    let share = Share {
        record_id: record_id.to_owned(),
        grantee_msp: consent.grantee_msp.clone(),
        consent_id: consent.id.clone(),
        patient_id: record.patient_id.clone(),
        version: record.version,
        content_hash: record.content_hash.clone(),
        shared_by_msp: caller.mspid.clone(),
        shared_by_subject: caller.subject.clone(),
        shared_at: ctx.now(),
        tx_id: ctx.tx_id(),
    };
    put_json(ctx, &share_key(record_id, &consent.grantee_msp), &share).await?;
    put_json(
        ctx,
        &format!(
            "{}{record_id}\u{0}",
            shares_of_consent_prefix(&record.patient_id, &consent.id)
        ),
        &share,
    )
    .await?;
    ctx.event("RecordShared", record_id.as_bytes().to_vec());
    Ok(share)
}

/// The share that lets `caller` read `record` now: shared with its organisation, under a
/// consent that is still valid and admits its role.
pub(crate) async fn check_share_reader<C: Ctx>(
    ctx: &mut C,
    record: &RecordEntry,
    caller: &Caller,
) -> Result<Share, ContractError> {
    let share: Share = get_json(ctx, &share_key(&record.id, &caller.mspid), "share")
        .await?
        .ok_or_else(|| {
            ContractError::Forbidden(format!(
                "record {} has not been shared with {}",
                record.id, caller.mspid
            ))
        })?;
    let consent = load_consent(ctx, &share.patient_id, &share.consent_id).await?;
    check_consent(&consent, record, ctx.now())?;
    if consent.grantee_msp != caller.mspid {
        return Err(ContractError::Forbidden(format!(
            "consent {} was granted to {}, not {}",
            consent.id, consent.grantee_msp, caller.mspid
        )));
    }
    if let Some(role) = &consent.grantee_role
        && caller.role.as_deref() != Some(role.as_str())
    {
        return Err(ContractError::Forbidden(format!(
            "consent {} is for the role {role} only",
            consent.id
        )));
    }
    Ok(share)
}

/// `ReadSharedRecord(recordId, ticket)`, evaluated: the grantee's shared copy, for a holder of
/// a `RequestAccess` ticket, while the consent holds (checked again here).
pub async fn read_shared<C: Ctx>(
    ctx: &mut C,
    record_id: &str,
    ticket: &str,
) -> Result<RecordContent, ContractError> {
    let caller = ctx.caller();
    let record = records::load(ctx, record_id).await?;
    let share = check_share_reader(ctx, &record, &caller).await?;
    records::check_ticket(ctx, &record, ticket, "share").await?;
    let bytes = records::private_content(
        ctx,
        &shared_collection(&share.shared_by_msp, &share.grantee_msp),
        &shared_content_key(record_id, &share.grantee_msp),
        Some(&share.content_hash),
        &format!("shared copy of record {record_id}"),
    )
    .await?;
    let sealed = records::parse_content(&bytes)?;
    Ok(RecordContent {
        content: sealed.content,
        salt: sealed.salt,
        version: share.version,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::{NOW, call, create, doctor, ledger, nurse, patient, read_as};

    fn consent(id: &str, expires: i64, scope: &str) -> String {
        format!(
            r#"{{"id":"{id}","granteeMsp":"Hospital2MSP","scope":{scope},"purpose":"second opinion","expiresAt":{expires}}}"#
        )
    }

    #[tokio::test]
    async fn consent_grant_share_read_revoke() {
        let mut l = ledger();
        create(&mut l, "R-1").await.unwrap();
        let p = patient("Hospital1MSP", "P-0042");
        let c = call(
            &mut l,
            p.clone(),
            "tx-g",
            "GrantConsent",
            &[&consent(
                "C-1",
                NOW + 3600,
                r#"{"recordTypes":["Observation"]}"#,
            )],
            None,
        )
        .await
        .unwrap();
        assert_eq!(c["patientId"], "P-0042");
        assert!(l.key_policies.contains_key(&consent_key("P-0042", "C-1")));
        let s = call(
            &mut l,
            doctor("Hospital1MSP"),
            "tx-s",
            "ShareRecord",
            &["R-1", "C-1"],
            None,
        )
        .await
        .unwrap();
        assert_eq!(s["granteeMsp"], "Hospital2MSP");
        let shared = (
            "shared_Hospital1MSP_Hospital2MSP".to_owned(),
            "shared/R-1/Hospital2MSP".to_owned(),
        );
        assert!(l.private.contains_key(&shared));

        let r = read_as(
            &mut l,
            doctor("Hospital2MSP"),
            "tx-rs",
            "ReadSharedRecord",
            &["R-1", "second opinion"],
        )
        .await
        .unwrap();
        assert_eq!(
            crate::records::tests::content_of(&r)["valueString"],
            "150/95"
        );
        // The read is in the provenance, with who and why.
        let prov = call(
            &mut l,
            p.clone(),
            "tx-pv",
            "GetRecordProvenance",
            &["R-1"],
            None,
        )
        .await
        .unwrap();
        let reads = prov["reads"].as_array().unwrap();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0]["readerMsp"], "Hospital2MSP");
        assert_eq!(reads[0]["via"], "share");

        let listed = call(&mut l, p.clone(), "t", "ListConsents", &[], None)
            .await
            .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);
        let for_h2 = call(
            &mut l,
            nurse("Hospital2MSP"),
            "t",
            "ListConsents",
            &["P-0042"],
            None,
        )
        .await
        .unwrap();
        assert_eq!(for_h2.as_array().unwrap().len(), 1);
        let for_h3 = call(
            &mut l,
            nurse("Hospital3MSP"),
            "t",
            "ListConsents",
            &["P-0042"],
            None,
        )
        .await
        .unwrap();
        assert!(for_h3.as_array().unwrap().is_empty());

        // Revocation: the next read is refused and the shared copy is erased.
        call(&mut l, p.clone(), "tx-rv", "RevokeConsent", &["C-1"], None)
            .await
            .unwrap();
        assert!(!l.private.contains_key(&shared));
        let e = call(
            &mut l,
            doctor("Hospital2MSP"),
            "t",
            "ReadSharedRecord",
            &["R-1", "tx-rs"],
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("revoked"),
            "a ticket does not outlive its consent: {e}"
        );
        let e = call(
            &mut l,
            doctor("Hospital2MSP"),
            "t",
            "RequestAccess",
            &["R-1", "again"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        let e = call(&mut l, p.clone(), "t", "RevokeConsent", &["C-1"], None)
            .await
            .unwrap_err();
        assert!(matches!(e, ContractError::Conflict(_)), "{e}");

        // The provenance names the share and the consent's grant and revocation (the
        // transaction that erased the copy), so an export can prove all three.
        let prov = call(&mut l, p, "t", "GetRecordProvenance", &["R-1"], None)
            .await
            .unwrap();
        let shares = prov["shares"].as_array().unwrap();
        assert_eq!(shares.len(), 1, "{prov}");
        assert_eq!(shares[0]["txId"], "tx-s");
        assert_eq!(shares[0]["granteeMsp"], "Hospital2MSP");
        assert_eq!(shares[0]["consentId"], "C-1");
        let consents: Vec<(&str, bool)> = prov["consents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["txId"].as_str().unwrap(), c["revoked"].as_bool().unwrap()))
            .collect();
        assert_eq!(consents, [("tx-g", false), ("tx-rv", true)], "{prov}");
    }

    #[tokio::test]
    async fn consent_rules_expiry_scope_role_and_parties() {
        let mut l = ledger();
        create(&mut l, "R-1").await.unwrap();
        let p = patient("Hospital1MSP", "P-0042");
        // Only patients grant; an expiry in the past is refused.
        let e = call(
            &mut l,
            doctor("Hospital1MSP"),
            "t",
            "GrantConsent",
            &[&consent("C-0", NOW + 10, r#"{"recordIds":["R-1"]}"#)],
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ContractError::Forbidden(_)), "{e}");
        let e = call(
            &mut l,
            p.clone(),
            "t",
            "GrantConsent",
            &[&consent("C-0", NOW - 1, r#"{"recordIds":["R-1"]}"#)],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
        // A consent that does not cover the record's type cannot be used to share it.
        call(
            &mut l,
            p.clone(),
            "t1",
            "GrantConsent",
            &[&consent(
                "C-2",
                NOW + 100,
                r#"{"recordTypes":["Condition"]}"#,
            )],
            None,
        )
        .await
        .unwrap();
        let e = call(
            &mut l,
            doctor("Hospital1MSP"),
            "t",
            "ShareRecord",
            &["R-1", "C-2"],
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("does not cover"), "{e}");
        // A nurse may not share; another hospital's doctor may not share.
        call(
            &mut l,
            p.clone(),
            "t2",
            "GrantConsent",
            &[&consent("C-3", NOW + 100, r#"{"recordIds":["R-1"]}"#)],
            None,
        )
        .await
        .unwrap();
        for who in [nurse("Hospital1MSP"), doctor("Hospital2MSP")] {
            let e = call(&mut l, who, "t", "ShareRecord", &["R-1", "C-3"], None)
                .await
                .unwrap_err();
            assert!(matches!(e, ContractError::Forbidden(_)), "{e}");
        }
        call(
            &mut l,
            doctor("Hospital1MSP"),
            "t3",
            "ShareRecord",
            &["R-1", "C-3"],
            None,
        )
        .await
        .unwrap();
        // Not shared with Hospital3; Hospital2 reads until the consent expires.
        let e = read_as(
            &mut l,
            doctor("Hospital3MSP"),
            "t",
            "ReadSharedRecord",
            &["R-1", "x"],
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("has not been shared"), "{e}");
        read_as(
            &mut l,
            doctor("Hospital2MSP"),
            "t4",
            "ReadSharedRecord",
            &["R-1", "in time"],
        )
        .await
        .unwrap();
        let mut later =
            crate::ctx::MemoryCtx::new(&mut l, doctor("Hospital2MSP"), "t4b", NOW + 101);
        let e = read_shared(&mut later, "R-1", "t4").await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        drop(later);
        // A role-restricted consent admits only that role.
        call(&mut l, p.clone(), "t5", "GrantConsent", &[
            r#"{"id":"C-4","granteeMsp":"Hospital2MSP","granteeRole":"doctor","scope":{"recordIds":["R-1"]},"purpose":"surgery","expiresAt":1900000000}"#,
        ], None)
        .await
        .unwrap();
        call(
            &mut l,
            doctor("Hospital1MSP"),
            "t6",
            "ShareRecord",
            &["R-1", "C-4"],
            None,
        )
        .await
        .unwrap();
        let e = read_as(
            &mut l,
            nurse("Hospital2MSP"),
            "t",
            "ReadSharedRecord",
            &["R-1", "x"],
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("role doctor"), "{e}");
        read_as(
            &mut l,
            doctor("Hospital2MSP"),
            "t7",
            "ReadSharedRecord",
            &["R-1", "surgery"],
        )
        .await
        .unwrap();
        // Bad consents: clear errors, nothing stored.
        let before = l.state.len();
        for (body, want) in [
            ("{", "consent"),
            (
                r#"{"id":"C-9","granteeMsp":"Hospital2MSP","scope":{},"purpose":"x","expiresAt":1900000000}"#,
                "scope",
            ),
            (
                r#"{"id":"C-9","granteeMsp":"Hospital2MSP","scope":{"recordTypes":["Pizza"]},"purpose":"x","expiresAt":1900000000}"#,
                "FHIR",
            ),
            (
                r#"{"id":"C-9","granteeMsp":"Hospital2MSP","scope":{"recordIds":["R-1"]},"purpose":"","expiresAt":1900000000}"#,
                "purpose",
            ),
            (
                r#"{"id":"C 9","granteeMsp":"Hospital2MSP","scope":{"recordIds":["R-1"]},"purpose":"x","expiresAt":1900000000}"#,
                "consent id",
            ),
        ] {
            let e = call(&mut l, p.clone(), "t", "GrantConsent", &[body], None)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
        assert_eq!(l.state.len(), before);
        let e = call(
            &mut l,
            patient("Hospital1MSP", "P-0001"),
            "t",
            "RevokeConsent",
            &["C-3"],
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ContractError::NotFound(_)),
            "another patient's consent: {e}"
        );
    }
}
