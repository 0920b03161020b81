//! MedLedger's medical chaincode: electronic medical records with provenance (`records`),
//! sharing under patient consent (`sharing`) and medical certificates (`certificates`).
//!
//! Functions (`args[0]`), JSON documented in `chaincode/README.md`:
//! `CreateRecord(json)`, `AmendRecord(id, reason)`, `GetRecord(id)`, `RequestAccess(id,
//! purpose)`, `ReadRecord(id, ticket[, version])`, `ListRecordsByPatient(patientId, pageSize, bookmark)`, `GetRecordProvenance(id)`;
//! `GrantConsent(json)`, `RevokeConsent(id)`, `ListConsents([patientId])`,
//! `ShareRecord(recordId, consentId)`, `ReadSharedRecord(recordId, ticket)`;
//! `IssueCertificate(json)`, `VerifyCertificate(id, sha256)`, `RevokeCertificate(id, reason)`,
//! `CertificateHistory(id)`.

pub mod certificates;
pub mod ctx;
pub mod fhir;
pub mod records;
pub mod sharing;

use ctx::Ctx;

/// Why a call failed; the chaincode answers status 500 with `<kind>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("ledger: {0}")]
    Ledger(String),
}

fn arg<'a>(args: &'a [String], i: usize, name: &str) -> Result<&'a str, ContractError> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| ContractError::Invalid(format!("missing argument {name}")))
}

fn json(v: &impl serde::Serialize) -> Result<Vec<u8>, ContractError> {
    serde_json::to_vec(v).map_err(|e| ContractError::Ledger(e.to_string()))
}

/// The medical chaincode, served by `medical-chaincode` or in-process by tests.
pub struct MedicalChaincode;

impl medledger_shim::Chaincode for MedicalChaincode {
    async fn invoke(&self, stub: &mut medledger_shim::Stub) -> medledger_shim::Response {
        use medledger_shim::ResponseExt;
        let (function, params) = (stub.function(), stub.params());
        match invoke(stub, &function, &params).await {
            Ok(payload) => medledger_shim::Response::success(payload),
            Err(e) => medledger_shim::Response::error(e.to_string()),
        }
    }
}

/// Dispatches one call; the result is the JSON payload.
pub async fn invoke<C: Ctx>(
    ctx: &mut C,
    function: &str,
    args: &[String],
) -> Result<Vec<u8>, ContractError> {
    if function.is_empty() {
        return Err(ContractError::Invalid("no function named".into()));
    }
    if args.iter().map(String::len).sum::<usize>() > 256 * 1024 {
        return Err(ContractError::Invalid(
            "arguments larger than 256 KiB".into(),
        ));
    }
    let opt = |i: usize| args.get(i).map(String::as_str);
    match function {
        "CreateRecord" => json(&records::create(ctx, arg(args, 0, "record JSON")?).await?),
        "AmendRecord" => {
            json(&records::amend(ctx, arg(args, 0, "record id")?, arg(args, 1, "reason")?).await?)
        }
        "GetRecord" => json(&records::get(ctx, arg(args, 0, "record id")?).await?),
        "RequestAccess" => json(
            &records::request_access(ctx, arg(args, 0, "record id")?, arg(args, 1, "purpose")?)
                .await?,
        ),
        "ReadRecord" => json(
            &records::read(
                ctx,
                arg(args, 0, "record id")?,
                arg(args, 1, "ticket")?,
                opt(2),
            )
            .await?,
        ),
        "ListRecordsByPatient" => json(
            &records::list_by_patient(
                ctx,
                arg(args, 0, "patient id")?,
                opt(1).unwrap_or("20"),
                opt(2).unwrap_or(""),
            )
            .await?,
        ),
        "GetRecordProvenance" => json(&records::provenance(ctx, arg(args, 0, "record id")?).await?),
        "GrantConsent" => json(&sharing::grant(ctx, arg(args, 0, "consent JSON")?).await?),
        "RevokeConsent" => json(&sharing::revoke(ctx, arg(args, 0, "consent id")?).await?),
        "ListConsents" => json(&sharing::list(ctx, opt(0)).await?),
        "ShareRecord" => json(
            &sharing::share(ctx, arg(args, 0, "record id")?, arg(args, 1, "consent id")?).await?,
        ),
        "ReadSharedRecord" => json(
            &sharing::read_shared(ctx, arg(args, 0, "record id")?, arg(args, 1, "ticket")?).await?,
        ),
        "IssueCertificate" => {
            json(&certificates::issue(ctx, arg(args, 0, "certificate JSON")?).await?)
        }
        "VerifyCertificate" => {
            json(&certificates::verify(ctx, arg(args, 0, "id")?, arg(args, 1, "sha256")?).await?)
        }
        "RevokeCertificate" => {
            json(&certificates::revoke(ctx, arg(args, 0, "id")?, arg(args, 1, "reason")?).await?)
        }
        "CertificateHistory" => json(&certificates::history(ctx, arg(args, 0, "id")?).await?),
        other => Err(ContractError::Invalid(format!(
            "unknown function {other:?}"
        ))),
    }
}
