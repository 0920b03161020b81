//! Serves the medical chaincode as chaincode-as-a-service:
//! `medical-chaincode --address HOST:PORT --package-id LABEL:HASH`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_shim::run_from_args(
        "medical-chaincode",
        medledger_medical_chaincode::MedicalChaincode,
    )
    .await
}
