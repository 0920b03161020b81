//! Medical certificates (diagnosis, vaccination, sick leave, fitness): issued only by a doctor
//! (CA attribute `role=doctor`), verified by anyone holding the document (its SHA-256 must match),
//! revoked by the issuer or an admin of the issuer's organisation, with their full history.

use serde::{Deserialize, Serialize};

use crate::ContractError;
use crate::ctx::Ctx;

const KINDS: [&str; 4] = ["diagnosis", "vaccination", "sick_leave", "fitness"];

/// The body of `IssueCertificate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRequest {
    pub id: String,
    pub patient_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Lowercase hex SHA-256 of the certificate document.
    pub content_hash: String,
    pub valid_from: i64,
    pub valid_until: i64,
}

/// A certificate as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub id: String,
    pub patient_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content_hash: String,
    pub valid_from: i64,
    pub valid_until: i64,
    pub issuer_msp: String,
    pub issuer_subject: String,
    pub issued_at: i64,
    pub issued_tx: String,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

/// The answer of `VerifyCertificate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// `valid`, `revoked`, `expired`, `not_yet_valid` or `mismatch`.
    pub status: String,
    pub issuer_msp: String,
    pub issuer_subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub valid_until: i64,
}

fn key(id: &str) -> String {
    format!("certificate/{id}")
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ContractError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ContractError::Invalid(format!(
            "{what} {id:?} must be 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

async fn load<C: Ctx>(ctx: &mut C, id: &str) -> Result<Certificate, ContractError> {
    check_id("certificate id", id)?;
    let bytes = ctx
        .get(&key(id))
        .await
        .map_err(ContractError::Ledger)?
        .ok_or_else(|| ContractError::NotFound(format!("certificate {id} does not exist")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ContractError::Ledger(format!("stored certificate {id} is corrupt: {e}")))
}

/// `IssueCertificate(json)`: only a doctor may issue.
pub async fn issue<C: Ctx>(ctx: &mut C, json: &str) -> Result<Certificate, ContractError> {
    let caller = ctx.caller();
    if caller.role.as_deref() != Some("doctor") {
        return Err(ContractError::Forbidden(
            "only a doctor (role=doctor) may issue medical certificates".into(),
        ));
    }
    let req: IssueRequest = serde_json::from_str(json)
        .map_err(|e| ContractError::Invalid(format!("malformed certificate request: {e}")))?;
    check_id("certificate id", &req.id)?;
    check_id("patient id", &req.patient_id)?;
    if !KINDS.contains(&req.kind.as_str()) {
        return Err(ContractError::Invalid(format!(
            "type {:?} must be one of {KINDS:?}",
            req.kind
        )));
    }
    if req.content_hash.len() != 64
        || !req
            .content_hash
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(ContractError::Invalid(
            "contentHash must be 64 lowercase hex characters (SHA-256)".into(),
        ));
    }
    if req.valid_until <= req.valid_from {
        return Err(ContractError::Invalid(
            "validUntil must be after validFrom".into(),
        ));
    }
    if ctx
        .get(&key(&req.id))
        .await
        .map_err(ContractError::Ledger)?
        .is_some()
    {
        return Err(ContractError::Conflict(format!(
            "certificate {} already exists",
            req.id
        )));
    }
    let cert = Certificate {
        id: req.id,
        patient_id: req.patient_id,
        kind: req.kind,
        content_hash: req.content_hash,
        valid_from: req.valid_from,
        valid_until: req.valid_until,
        issuer_msp: caller.mspid,
        issuer_subject: caller.subject,
        issued_at: ctx.now(),
        issued_tx: ctx.tx_id(),
        revoked: false,
        revocation_reason: None,
    };
    let bytes = serde_json::to_vec(&cert).map_err(|e| ContractError::Ledger(e.to_string()))?;
    ctx.put(&key(&cert.id), bytes)
        .await
        .map_err(ContractError::Ledger)?;
    ctx.event("CertificateIssued", cert.id.clone().into_bytes());
    Ok(cert)
}

/// `VerifyCertificate(id, hash)`: anyone; compares the document's hash and the validity.
pub async fn verify<C: Ctx>(
    ctx: &mut C,
    id: &str,
    content_hash: &str,
) -> Result<Verification, ContractError> {
    let cert = load(ctx, id).await?;
    let now = ctx.now();
    let status = if cert.revoked {
        "revoked"
    } else if !cert.content_hash.eq_ignore_ascii_case(content_hash) {
        "mismatch"
    } else if now > cert.valid_until {
        "expired"
    } else if now < cert.valid_from {
        "not_yet_valid"
    } else {
        "valid"
    };
    Ok(Verification {
        status: status.into(),
        issuer_msp: cert.issuer_msp,
        issuer_subject: cert.issuer_subject,
        kind: cert.kind,
        valid_until: cert.valid_until,
    })
}

/// `RevokeCertificate(id, reason)`: the issuer, or an admin of the issuer's organisation.
pub async fn revoke<C: Ctx>(
    ctx: &mut C,
    id: &str,
    reason: &str,
) -> Result<Certificate, ContractError> {
    let mut cert = load(ctx, id).await?;
    let caller = ctx.caller();
    let is_issuer = caller.mspid == cert.issuer_msp && caller.subject == cert.issuer_subject;
    let is_org_admin =
        caller.mspid == cert.issuer_msp && caller.node_type.as_deref() == Some("admin");
    if !is_issuer && !is_org_admin {
        return Err(ContractError::Forbidden(
            "only the issuer or an admin of its organisation may revoke".into(),
        ));
    }
    if cert.revoked {
        return Err(ContractError::Conflict(format!(
            "certificate {id} is already revoked"
        )));
    }
    if reason.trim().is_empty() || reason.len() > 512 {
        return Err(ContractError::Invalid(
            "a revocation reason of 1-512 characters is required".into(),
        ));
    }
    cert.revoked = true;
    cert.revocation_reason = Some(reason.to_owned());
    let bytes = serde_json::to_vec(&cert).map_err(|e| ContractError::Ledger(e.to_string()))?;
    ctx.put(&key(id), bytes)
        .await
        .map_err(ContractError::Ledger)?;
    ctx.event("CertificateRevoked", id.as_bytes().to_vec());
    Ok(cert)
}

/// `CertificateHistory(id)`: every version, newest first, with its transaction.
pub async fn history<C: Ctx>(
    ctx: &mut C,
    id: &str,
) -> Result<Vec<serde_json::Value>, ContractError> {
    check_id("certificate id", id)?;
    let changes = ctx.history(&key(id)).await.map_err(ContractError::Ledger)?;
    Ok(changes
        .into_iter()
        .map(|c| {
            let cert: Option<Certificate> = serde_json::from_slice(&c.value).ok();
            serde_json::json!({
                "txId": c.tx_id,
                "timestamp": c.timestamp,
                "revoked": cert.as_ref().map(|x| x.revoked),
                "issuerMsp": cert.as_ref().map(|x| x.issuer_msp.clone()),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{Caller, MemoryCtx, MemoryLedger};

    fn caller(msp: &str, name: &str, role: Option<&str>, node_type: &str) -> Caller {
        Caller::test(msp, name, role, node_type, None)
    }

    fn doctor() -> Caller {
        caller("Hospital1MSP", "doctor1", Some("doctor"), "client")
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn request(id: &str) -> String {
        serde_json::json!({
            "id": id, "patientId": "P-0042", "type": "vaccination",
            "contentHash": HASH, "validFrom": 1000, "validUntil": 5000
        })
        .to_string()
    }

    async fn issue_as(
        ledger: &mut MemoryLedger,
        who: Caller,
        body: &str,
    ) -> Result<Certificate, ContractError> {
        let mut ctx = MemoryCtx::new(ledger, who, "tx-issue", 2000);
        let r = issue(&mut ctx, body).await;
        if r.is_ok() {
            ctx.commit();
        }
        r
    }

    #[tokio::test]
    async fn a_doctor_issues_and_anyone_verifies() {
        let mut ledger = MemoryLedger::default();
        let cert = issue_as(&mut ledger, doctor(), &request("C-1"))
            .await
            .unwrap();
        assert_eq!(cert.issuer_msp, "Hospital1MSP");
        assert_eq!(cert.issued_tx, "tx-issue");
        let mut ctx = MemoryCtx::new(
            &mut ledger,
            caller("Hospital2MSP", "clerk", None, "client"),
            "tx-v",
            3000,
        );
        let v = verify(&mut ctx, "C-1", HASH).await.unwrap();
        assert_eq!(
            (v.status.as_str(), v.issuer_msp.as_str()),
            ("valid", "Hospital1MSP")
        );
        assert_eq!(
            verify(&mut ctx, "C-1", &"0".repeat(64))
                .await
                .unwrap()
                .status,
            "mismatch"
        );
        let mut late = MemoryCtx::new(&mut ledger, doctor(), "tx-late", 9000);
        assert_eq!(
            verify(&mut late, "C-1", HASH).await.unwrap().status,
            "expired"
        );
        let mut early = MemoryCtx::new(&mut ledger, doctor(), "tx-early", 10);
        assert_eq!(
            verify(&mut early, "C-1", HASH).await.unwrap().status,
            "not_yet_valid"
        );
    }

    #[tokio::test]
    async fn only_doctors_issue() {
        let mut ledger = MemoryLedger::default();
        for who in [
            caller("Hospital1MSP", "nurse1", Some("nurse"), "client"),
            caller("Hospital1MSP", "patient1", Some("patient"), "client"),
            caller("Hospital1MSP", "admin", None, "admin"),
        ] {
            assert!(matches!(
                issue_as(&mut ledger, who, &request("C-2")).await,
                Err(ContractError::Forbidden(_))
            ));
        }
        assert!(ledger.state.is_empty());
    }

    #[tokio::test]
    async fn revocation_by_issuer_or_org_admin_only() {
        let mut ledger = MemoryLedger::default();
        issue_as(&mut ledger, doctor(), &request("C-3"))
            .await
            .unwrap();
        for who in [
            caller("Hospital1MSP", "doctor2", Some("doctor"), "client"),
            caller("Hospital2MSP", "admin", None, "admin"),
        ] {
            let mut ctx = MemoryCtx::new(&mut ledger, who, "tx-r", 2500);
            assert!(matches!(
                revoke(&mut ctx, "C-3", "error").await,
                Err(ContractError::Forbidden(_))
            ));
        }
        let mut ctx = MemoryCtx::new(
            &mut ledger,
            caller("Hospital1MSP", "admin", None, "admin"),
            "tx-r2",
            2600,
        );
        let revoked = revoke(&mut ctx, "C-3", "issued to the wrong patient")
            .await
            .unwrap();
        assert!(revoked.revoked);
        assert_eq!(ctx.events[0].0, "CertificateRevoked");
        ctx.commit();
        let mut ctx = MemoryCtx::new(&mut ledger, doctor(), "tx-v", 2700);
        assert_eq!(
            verify(&mut ctx, "C-3", HASH).await.unwrap().status,
            "revoked"
        );
        assert!(matches!(
            revoke(&mut ctx, "C-3", "again").await,
            Err(ContractError::Conflict(_))
        ));
        let h = history(&mut ctx, "C-3").await.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["txId"], "tx-r2");
        assert_eq!(h[0]["revoked"], true);
        assert_eq!(h[1]["txId"], "tx-issue");
    }

    #[tokio::test]
    async fn bad_input_is_a_clear_error() {
        let mut ledger = MemoryLedger::default();
        let bad = [
            "not json".to_string(),
            "{}".to_string(),
            request("bad id with spaces"),
            request("C-4").replace("vaccination", "astrology"),
            request("C-4").replace(HASH, "xyz"),
            request("C-4").replace("5000", "500"),
            request("C-4").replace("\"id\"", "\"extra\":1,\"id\""),
        ];
        for body in bad {
            let r = issue_as(&mut ledger, doctor(), &body).await;
            assert!(matches!(r, Err(ContractError::Invalid(_))), "{body}: {r:?}");
        }
        issue_as(&mut ledger, doctor(), &request("C-4"))
            .await
            .unwrap();
        assert!(matches!(
            issue_as(&mut ledger, doctor(), &request("C-4")).await,
            Err(ContractError::Conflict(_))
        ));
        let mut ctx = MemoryCtx::new(&mut ledger, doctor(), "t", 1);
        assert!(matches!(
            verify(&mut ctx, "C-404", HASH).await,
            Err(ContractError::NotFound(_))
        ));
        assert!(matches!(
            verify(&mut ctx, "../etc", HASH).await,
            Err(ContractError::Invalid(_))
        ));
    }
}
