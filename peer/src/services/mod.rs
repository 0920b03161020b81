//! Services: the peer's gRPC faces. Fabric's Gateway and Deliver for clients, and the private
//! data service (push, pull, reconciliation) between organisations' peers.

pub mod deliver;
pub mod gateway;
pub mod privdata;
