//! `medical-chaincode --address HOST:PORT --package-id LABEL:HASH`: serves the medical chaincode
//! as chaincode-as-a-service.

fn arg(name: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (Some(address), Some(package_id)) = (
        arg("--address", "CHAINCODE_SERVER_ADDRESS"),
        arg("--package-id", "CHAINCODE_ID"),
    ) else {
        eprintln!("usage: medical-chaincode --address HOST:PORT --package-id LABEL:HASH");
        return std::process::ExitCode::from(2);
    };
    let Ok(addr) = address.parse() else {
        eprintln!("Error: invalid address {address:?}");
        return std::process::ExitCode::from(2);
    };
    match medledger_shim::serve(
        addr,
        package_id,
        None,
        medledger_medical_chaincode::MedicalChaincode,
    )
    .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
