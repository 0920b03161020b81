//! Serves the example `KvStore` chaincode as chaincode-as-a-service:
//! `kvstore-chaincode --address 127.0.0.1:9999 --package-id kvstore_1.0:<hash>`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_shim::run_from_args("kvstore-chaincode", medledger_shim::example::KvStore).await
}
