//! Fabric's client-facing protobuf messages and gRPC services, byte-compatible with Fabric
//! (same packages, names, field numbers), plus MedLedger's internal `medledger.*` packages.
//!
//! Modules follow the proto packages: `common`, `msp`, `protos` (peer), `orderer`, `gateway`,
//! `rwset`, `kvrwset`, `queryresult`, `lifecycle`, `google::rpc`, `medledger::*`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// The encoded `FileDescriptorSet` of every message above, for reflection and for tests
/// that compare our definitions with Fabric's.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
