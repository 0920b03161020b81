//! Serves the example `KvStore` chaincode as chaincode-as-a-service.
//!
//! `kvstore-chaincode --address 127.0.0.1:9999 --package-id kvstore_1.0:<hash>`
//! (or `CHAINCODE_SERVER_ADDRESS` / `CHAINCODE_ID`, the fabric-samples convention).

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
        eprintln!("usage: kvstore-chaincode --address HOST:PORT --package-id LABEL:HASH");
        return std::process::ExitCode::from(2);
    };
    let Ok(addr) = address.parse() else {
        eprintln!("Error: invalid address {address:?}");
        return std::process::ExitCode::from(2);
    };
    println!("kvstore chaincode {package_id} listening on {address}");
    match medledger_shim::serve(addr, package_id, None, medledger_shim::example::KvStore).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
