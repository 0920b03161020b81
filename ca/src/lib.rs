//! MedLedger's certificate authority: Fabric CA's REST API and rules (enroll, register,
//! reenroll, revoke, gencrl, identities, affiliations, certificates) over HTTPS, several CAs per
//! server, with identities and issued certificates in RocksDB, and a client that writes Fabric
//! MSP folders.

pub mod attrs;
pub mod authority;
pub mod cli;
pub mod client;
pub mod error;
pub mod manage;
pub mod server;
pub mod store;

pub use authority::{Authority, AuthorityConfig, CaHome};
pub use client::{CaClient, CaUrl, ClientError};
pub use error::CaError;
