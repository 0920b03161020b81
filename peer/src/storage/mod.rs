//! Storage: what a peer keeps on disk. The channel's ledger on RocksDB (blocks, world state,
//! history, private data, transient store) and the sealing of private data at rest.

pub mod ledger;
pub mod sealing;
