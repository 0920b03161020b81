//! The MedLedger peer: a channel's ledger on RocksDB, the endorser, chaincode support
//! (chaincode-as-a-service over Fabric's shim protocol), the committer with its plugins, and the
//! Fabric Gateway and Deliver services clients use.

pub mod chaincode;
pub mod channel;
pub mod cli;
pub mod collection;
pub mod comm;
pub mod committer;
pub mod deliver;
pub mod endorser;
pub mod gateway;
pub mod ledger;
pub mod lifecycle;
pub mod node;
pub mod plugins;
pub mod privdata;
pub mod sealing;
pub mod simulator;
