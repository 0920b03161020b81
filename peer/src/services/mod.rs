//! Services: the peer's gRPC faces. Fabric's Gateway and Deliver for clients, and the private
//! data service (push, pull, reconciliation) between organisations' peers; and the audit feed
//! (IHE ATNA), the peer's face towards a hospital's audit record repository.

pub mod audit;
pub mod deliver;
pub mod gateway;
pub mod privdata;
