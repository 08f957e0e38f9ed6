//! The Bulwark controller: a Raft-replicated (openraft) store of typed, revisioned
//! records on sled, served over mutual-TLS gRPC (tonic + rustls).

pub mod raft;
pub mod store;
pub mod tls;
