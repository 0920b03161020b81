//! Execution: running a chaincode against the channel's state without committing anything. The
//! simulator records reads and writes, chaincode support talks to chaincode servers, lifecycle is
//! the `_lifecycle` system chaincode, and plugins are the named endorsement and validation steps
//! a definition selects.

pub mod chaincode;
pub mod lifecycle;
pub mod plugins;
pub mod simulator;

use medledger_proto::protos::Response;

/// A chaincode-style response.
pub fn response(status: i32, message: impl Into<String>, payload: Vec<u8>) -> Response {
    Response {
        status,
        message: message.into(),
        payload,
    }
}
