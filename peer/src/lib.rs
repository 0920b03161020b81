//! The MedLedger peer: a channel's ledger on RocksDB, the endorser, chaincode support
//! (chaincode-as-a-service over Fabric's shim protocol), the committer with its plugins, and the
//! Fabric Gateway and Deliver services clients use.
//!
//! Layers, each naming only those below it (checked by `tests/tests/peer_layers.rs`):
//!
//! ```text
//! node         config, runner, CLI                        (starts everything)
//!   ↓
//! services     gateway, deliver, private data service,    (gRPC faces of the peer)
//!              audit feed (IHE ATNA)
//!   ↓
//! endorsement  endorser      validation  committer        (sign proposals | decide and commit)
//!   ↓
//! execution    simulator, chaincode support, lifecycle, plugins
//!   ↓
//! channel      channel in force, definitions, collections, block contents, private write sets
//!   ↓
//! storage      ledger on RocksDB, sealing of private data
//! ```
//! `comm` (dialling other nodes) is a leaf any layer above storage may use.

pub mod channel;
pub mod comm;
pub mod endorsement;
pub mod execution;
pub mod node;
pub mod services;
pub mod storage;
pub mod validation;
