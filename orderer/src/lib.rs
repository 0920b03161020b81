//! The MedLedger ordering service: a BFT (PBFT as SmartBFT runs it) consensus core as a pure
//! state machine, the crypto it needs over real identities, and the node around it.

pub mod byzantine;
pub mod cli;
pub mod consensus;
pub mod crypto;
pub mod faults;
pub mod genesis;
pub mod node;
pub mod recent;
pub mod store;
