//! Write chaincode in Rust and serve it as chaincode-as-a-service.
//!
//! Implement [`Chaincode`], then [`serve`] it on an address; the peer dials it with the address in
//! the package's `connection.json` and speaks Fabric's shim protocol (`protos.Chaincode/Connect`).
//! A [`Stub`] gives the transaction's arguments, transient data, creator identity (with its
//! Fabric CA attributes), and state calls that go to the peer.
//!
//! ```no_run
//! use medledger_shim::{Chaincode, Response, ResponseExt, Stub, serve};
//!
//! struct Counter;
//! impl Chaincode for Counter {
//!     async fn invoke(&self, stub: &mut Stub) -> Response {
//!         match stub.function().as_str() {
//!             "Increment" => {
//!                 let n = stub.get_state("n").await.ok().flatten()
//!                     .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok()).unwrap_or(0);
//!                 match stub.put_state("n", (n + 1).to_string().into_bytes()).await {
//!                     Ok(()) => Response::success((n + 1).to_string()),
//!                     Err(e) => Response::error(e.to_string()),
//!                 }
//!             }
//!             f => Response::error(format!("unknown function {f}")),
//!         }
//!     }
//! }
//! # async fn run() { serve("127.0.0.1:9999".parse().unwrap(), "counter:abc".into(), None, Counter).await.unwrap(); }
//! ```

pub mod example;
mod server;
mod stub;

pub use medledger_proto::protos::Response;
pub use server::{
    MAX_CONCURRENT_TRANSACTIONS, ServeError, ServerTls, run_from_args, serve, serve_with_listener,
};
pub use stub::{ClientIdentity, KeyModification, ShimError, Stub};

/// A chaincode: answers transactions (and the optional init).
pub trait Chaincode: Send + Sync + 'static {
    /// Called for a transaction whose definition requires initialisation (`--isInit`).
    fn init(&self, stub: &mut Stub) -> impl std::future::Future<Output = Response> + Send {
        let _ = stub;
        async { Response::success(Vec::new()) }
    }

    /// Called for every transaction; `stub.function()` is `args[0]`.
    fn invoke(&self, stub: &mut Stub) -> impl std::future::Future<Output = Response> + Send;
}

/// Constructors for the chaincode's answer.
pub trait ResponseExt {
    /// Status 200 with a payload.
    fn success(payload: impl Into<Vec<u8>>) -> Response;
    /// Status 500 with a message: the proposal is not endorsed.
    fn error(message: impl Into<String>) -> Response;
}

impl ResponseExt for Response {
    fn success(payload: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            message: String::new(),
            payload: payload.into(),
        }
    }
    fn error(message: impl Into<String>) -> Response {
        Response {
            status: 500,
            message: message.into(),
            payload: Vec::new(),
        }
    }
}
